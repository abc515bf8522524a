-- Insert the batch's events whose event_id is not in the table yet, looking only at the
-- batch's event dates (partition pruning).  Run by Warehouse.write_batch, which makes the
-- batch readable as `{batch_dataset}.{batch}` (properties as text) and runs this inside
-- the events table's write lock (two writers of a day never both insert an event_id).
-- A properties text BigQuery cannot parse exactly (SAFE.PARSE_JSON is NULL) is left out
-- here and quarantined by insert_unparsable_events.sql in the same transaction.
INSERT INTO `{dataset}.{table}`
  (event_id, event_name, distinct_id, event_timestamp, inserted_at, properties, event_date, device_id, os, mp_processing_time_ms)
SELECT
  b.event_id, b.event_name, b.distinct_id, b.event_timestamp, b.inserted_at, b.properties_json,
  b.event_date, b.device_id, b.os, b.mp_processing_time_ms
FROM (
  SELECT s.*, SAFE.PARSE_JSON(s.properties, wide_number_mode=>'exact') AS properties_json
  FROM `{batch_dataset}.{batch}` AS s
) AS b
WHERE b.properties_json IS NOT NULL
  AND NOT EXISTS (
    SELECT 1
    FROM `{dataset}.{table}` AS t
    WHERE t.event_date BETWEEN @date_from AND @date_to
      AND t.event_id = b.event_id
  )
