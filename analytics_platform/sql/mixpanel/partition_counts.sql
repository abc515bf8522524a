-- Rows per daily partition in a date range (materialization metadata).
SELECT event_date, COUNT(*) AS row_count
FROM `{dataset}.{table}`
WHERE event_date BETWEEN @from_date AND @to_date
GROUP BY event_date
ORDER BY event_date
