-- Up to @per_window sample events (earliest first) of each given window.
SELECT event_name, window_start, event_id, distinct_id, event_timestamp, properties
FROM (
  SELECT
    event_name,
    TIMESTAMP_MICROS(DIV(UNIX_MICROS(event_timestamp), @window_micros) * @window_micros) AS window_start,
    event_id,
    distinct_id,
    event_timestamp,
    properties
  FROM `{dataset}.{table}`
  WHERE event_date BETWEEN @date_from AND @date_to
    AND event_name IN UNNEST(@events)
    AND event_timestamp >= @scan_start
    AND event_timestamp < @scan_end
) AS w
WHERE window_start IN UNNEST(@window_starts)
QUALIFY ROW_NUMBER() OVER (PARTITION BY event_name, window_start ORDER BY event_timestamp, event_id) <= @per_window
ORDER BY event_name, window_start, event_timestamp, event_id
