-- Insert the batch's events whose event_id is not in the table yet, looking only at the
-- batch's event dates (partition pruning).  Run by Warehouse.insert_from_batch, which
-- makes the batch readable as `{batch_dataset}.{batch}`.
INSERT INTO `{dataset}.{table}`
  (event_id, event_name, distinct_id, event_timestamp, inserted_at, properties, event_date, device_id, os, mp_processing_time_ms)
SELECT
  b.event_id, b.event_name, b.distinct_id, b.event_timestamp, b.inserted_at, b.properties,
  b.event_date, b.device_id, b.os, b.mp_processing_time_ms
FROM `{batch_dataset}.{batch}` AS b
WHERE NOT EXISTS (
  SELECT 1
  FROM `{dataset}.{table}` AS t
  WHERE t.event_date BETWEEN @date_from AND @date_to
    AND t.event_id = b.event_id
)
