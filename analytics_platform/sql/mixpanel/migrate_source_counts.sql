-- The events table being migrated (any earlier shape): its rows, the rows that could not
-- be keyed (no event_id or no event_timestamp: the migration refuses them rather than
-- drop them) and the distinct (event_id, event date) keys - the rows the migrated table
-- must hold.  The event date: the row's UTC event date (its event_date, else the date of
-- its event_timestamp), built by mixpanel/migrate.py.
SELECT
  COUNT(*) AS source_rows,
  COUNTIF(s.event_id IS NULL) AS null_event_ids,
  COUNTIF(s.event_timestamp IS NULL) AS null_timestamps,
  (
    SELECT COUNT(*)
    FROM (
      SELECT DISTINCT k.event_id, k.event_day
      FROM (SELECT s2.event_id, {event_date_s2} AS event_day FROM `{dataset}.{table}` AS s2) AS k
      WHERE k.event_id IS NOT NULL
    ) AS d
  ) AS distinct_keys
FROM `{dataset}.{table}` AS s
