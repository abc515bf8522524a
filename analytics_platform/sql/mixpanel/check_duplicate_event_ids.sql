-- event_ids that appear more than once in the checked days (asset check: must be none).
SELECT event_id, COUNT(*) AS copies
FROM `{dataset}.{table}`
WHERE event_date BETWEEN @date_from AND @date_to
GROUP BY event_id
HAVING COUNT(*) > 1
ORDER BY copies DESC, event_id
LIMIT 20
