-- State-loss temp users: one set-based query over the raw Mixpanel events.
-- A pair (p, r) qualifies when
--   p.event_name = 'impression_privacy', p.event_timestamp in [@window_start, @as_of);
--   r.event_name = 'impression_restore_user_state_by_device_id';
--   both carry the same non-empty device id ($device_id, falling back to device_id);
--   p is on Android (mp_os, falling back to $os);
--   0 s <= r.event_timestamp - p.event_timestamp <= @max_gap_seconds (r may fall after @as_of).
-- The temp user is p.distinct_id (non-empty); one row per temp user (its earliest pair),
-- flagged when it is already in the cohort table or was removed from it on purpose.
-- Identifiers: {events_dataset}.{events_table}, {cohort_dataset}.{cohort_table},
-- {cohort_dataset}.{removed_table}.
-- A NULL device id (missing or empty) never joins. The fragments {{prune_*}} (files
-- prune_privacy_days / prune_restore_days) only let BigQuery skip partitions
-- (event_date = DATE(event_timestamp) in UTC); the rule itself is on event_timestamp, and
-- they are empty when the table has no event_date column. Each side is its own scan with an equality filter on event_name (pushed into the scan, so
-- `properties` is only read for the cohort events).
WITH privacy AS (
  -- device_id only for Android (mp_os, falling back to $os): other privacy events get a
  -- NULL key and never join (a key, not a filter: the JSON is read for this event only).
  SELECT
    distinct_id,
    event_timestamp,
    CASE
      WHEN COALESCE(NULLIF(JSON_VALUE(properties, '$.mp_os'), ''), JSON_VALUE(properties, '$."$os"')) = 'Android'
      THEN COALESCE(
        NULLIF(JSON_VALUE(properties, '$."$device_id"'), ''),
        NULLIF(JSON_VALUE(properties, '$.device_id'), '')
      )
    END AS device_id
  FROM `{events_dataset}.{events_table}`
  WHERE event_name = 'impression_privacy'
    {prune_privacy_days}
    AND event_timestamp >= @window_start
    AND event_timestamp < @as_of
    AND distinct_id IS NOT NULL
    AND distinct_id != ''
),
restore AS (
  SELECT
    event_timestamp,
    COALESCE(
      NULLIF(JSON_VALUE(properties, '$."$device_id"'), ''),
      NULLIF(JSON_VALUE(properties, '$.device_id'), '')
    ) AS device_id
  FROM `{events_dataset}.{events_table}`
  WHERE event_name = 'impression_restore_user_state_by_device_id'
    {prune_restore_days}
    AND event_timestamp >= @window_start
    AND event_timestamp <= @restore_until
),
pairs AS (
  SELECT
    p.distinct_id,
    p.device_id,
    p.event_timestamp AS privacy_event_at,
    r.event_timestamp AS restore_event_at,
    ROW_NUMBER() OVER (
      PARTITION BY p.distinct_id
      ORDER BY p.event_timestamp, r.event_timestamp, p.device_id
    ) AS pair_rank
  FROM privacy AS p
  JOIN restore AS r
    ON r.device_id = p.device_id
   AND r.event_timestamp >= p.event_timestamp
   AND r.event_timestamp <= TIMESTAMP_ADD(p.event_timestamp, INTERVAL @max_gap_seconds SECOND)
)
SELECT
  pairs.distinct_id,
  pairs.device_id,
  pairs.privacy_event_at,
  pairs.restore_event_at,
  known.distinct_id IS NOT NULL AS already_known,
  removed.distinct_id IS NOT NULL AS removed_before
FROM pairs
LEFT JOIN `{cohort_dataset}.{cohort_table}` AS known
  ON known.distinct_id = pairs.distinct_id
LEFT JOIN `{cohort_dataset}.{removed_table}` AS removed
  ON removed.distinct_id = pairs.distinct_id
WHERE pairs.pair_rank = 1
ORDER BY pairs.distinct_id
