-- Rows without event_timestamp (or event_id) in the checked days (asset check: must be 0).
SELECT
  COUNTIF(event_timestamp IS NULL) AS null_timestamps,
  COUNTIF(event_id IS NULL) AS null_event_ids,
  COUNT(*) AS rows_checked
FROM `{dataset}.{table}`
WHERE event_date BETWEEN @date_from AND @date_to
