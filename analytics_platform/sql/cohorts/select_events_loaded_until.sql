-- How far the Mixpanel events table is loaded, read from its recent days only (@since =
-- as_of - the allowed lag - 1 day; older rows cannot prove the table is fresh): the last
-- time ingestion wrote a row and the latest event time. The detection reads events up to
-- @as_of (+ 120 s for the restore event), so it refuses to run on a table that ingestion has
-- not brought that far.
-- Identifiers: {events_dataset}.{events_table}.
SELECT
  MAX(inserted_at) AS last_inserted_at,
  MAX(event_timestamp) AS last_event_at,
  COUNT(*) AS events
FROM `{events_dataset}.{events_table}`
WHERE event_timestamp >= @since
  {prune_recent_days}
