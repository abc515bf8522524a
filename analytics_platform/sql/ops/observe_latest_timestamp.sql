-- An external source table's newest record in [@since, @until) and the rows of that window
-- (the window bounds the scan: a table partitioned on the column reads the recent partitions).
SELECT
  MAX(`{ts_column}`) AS latest,
  COUNT(*) AS recent_rows
FROM `{dataset}.{table}`
WHERE `{ts_column}` >= @since
  AND `{ts_column}` < @until
