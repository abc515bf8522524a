-- Insert the batch's events whose event_id is not in the table yet, looking only at the
-- batch's event dates (partition pruning); the batch's ids are unique (the parser keeps
-- the first line of an id).  Run by Warehouse.write_batch, which makes the
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
LEFT JOIN (
  -- the batch's ids already in the table: the table's side is cut down to them by a
  -- join with the batch's ids first, so no step holds more than a batch's ids (memory
  -- flat in the table's size; measured: a NOT EXISTS, a plain LEFT JOIN or an IN filter
  -- let DuckDB's peak grow with the day's rows)
  -- Which ids are looked up: all of them, unless the export's days (@slice_from ..
  -- @slice_to) had no row before this export and hold exactly the @rows_expected rows it
  -- has inserted (no other writer since): then only an id kept from an earlier batch of the
  -- export can be there, and a fresh day is loaded without scanning its ids per batch.
  SELECT t.event_id
  FROM `{dataset}.{table}` AS t
  JOIN (
    SELECT k.event_id
    FROM `{batch_dataset}.{batch}` AS k
    WHERE k.seen_earlier_in_export
       OR @rows_expected < 0
       OR (SELECT COUNT(*) FROM `{dataset}.{table}` AS c
           WHERE c.event_date BETWEEN @slice_from AND @slice_to) <> @rows_expected
  ) AS k
    ON k.event_id = t.event_id
  WHERE t.event_date BETWEEN @date_from AND @date_to
) AS e
  ON e.event_id = b.event_id
WHERE b.properties_json IS NOT NULL
  AND e.event_id IS NULL
