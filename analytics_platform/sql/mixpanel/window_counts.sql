-- Event counts per tumbling window (aligned to UTC epoch multiples of @window_micros)
-- for the complete windows in [@scan_start, @scan_end); only windows whose count is
-- strictly greater than @threshold.  event_date bounds prune the partitions.
SELECT
  event_name,
  TIMESTAMP_MICROS(DIV(UNIX_MICROS(event_timestamp), @window_micros) * @window_micros) AS window_start,
  COUNT(*) AS event_count
FROM `{dataset}.{table}`
WHERE event_date BETWEEN @date_from AND @date_to
  AND event_name IN UNNEST(@events)
  AND event_timestamp >= @scan_start
  AND event_timestamp < @scan_end
GROUP BY event_name, window_start
HAVING COUNT(*) > @threshold
ORDER BY event_name, window_start
