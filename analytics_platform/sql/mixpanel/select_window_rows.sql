-- The rows of one event's window, as an alert shows them for people to paste into
-- BigQuery: rendered on one line with the parameters written in as literals
-- (store.rows_sql, rules.sql_with_literals).
SELECT * FROM `{dataset}.{table}`
WHERE event_date = @event_date
  AND event_name = @event_name
  AND event_timestamp >= @window_start
  AND event_timestamp < @window_end
