-- Export queries recorded in the last hour (the rolling window), oldest first.
SELECT queried_at, purpose
FROM mixpanel_export_budget
WHERE queried_at > :since
ORDER BY queried_at
