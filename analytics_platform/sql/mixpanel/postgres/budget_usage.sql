-- Export queries of the last hour by purpose (what operators and the run log see).
SELECT purpose, COUNT(*) AS queries, MIN(queried_at) AS oldest, MAX(queried_at) AS newest
FROM mixpanel_export_budget
WHERE queried_at > :since
GROUP BY purpose
ORDER BY purpose
