-- The Firebase events export's newest event (event_timestamp: INT64 microseconds) in
-- [@since, @until) and the rows of that window.
SELECT
  TIMESTAMP_MICROS(MAX(event_timestamp)) AS latest,
  COUNT(*) AS recent_rows
FROM `{dataset}.{table}`
WHERE event_timestamp >= UNIX_MICROS(@since)
  AND event_timestamp < UNIX_MICROS(@until)
