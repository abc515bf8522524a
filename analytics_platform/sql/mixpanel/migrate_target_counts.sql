-- The migrated table before the swap: its rows and distinct (event_id, event_date) keys
-- (equal when nothing is duplicated).
SELECT
  COUNT(*) AS target_rows,
  COUNT(DISTINCT CONCAT(t.event_id, '|', CAST(t.event_date AS STRING))) AS target_keys,
  COUNTIF(t.event_date IS NULL) AS null_event_dates
FROM `{dataset}.{target}` AS t
