-- Completeness record of each day in the export log (asset check late_rows_within_threshold):
-- the rows the day had gained up to its first export made after the day had ended (UTC),
-- and the rows re-exports after that one added (late events).  A day not exported since
-- it ended has no closed_at: all its rows count as rows_at_close.
WITH log AS (
  SELECT
    day,
    export_query_time,
    rows_inserted,
    MIN(IF(DATE(export_query_time) > day, export_query_time, NULL)) OVER (PARTITION BY day) AS closed_at
  FROM `{dataset}.{export_log}`
  WHERE day BETWEEN @date_from AND @date_to
)
SELECT
  day,
  MIN(closed_at) AS closed_at,
  SUM(IF(closed_at IS NULL OR export_query_time <= closed_at, rows_inserted, 0)) AS rows_at_close,
  SUM(IF(closed_at IS NOT NULL AND export_query_time > closed_at, rows_inserted, 0)) AS late_rows,
  COUNT(*) AS exports
FROM log
GROUP BY day
ORDER BY day
