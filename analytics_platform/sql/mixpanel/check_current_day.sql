-- The current day's rows and the last time one was written (freshness check metadata).
SELECT COUNT(*) AS rows_today, MAX(inserted_at) AS last_inserted_at, MAX(event_timestamp) AS last_event_at
FROM `{dataset}.{table}`
WHERE event_date = @today
