-- Temp users who were active on the UTC day [@day_start, @day_end) under the same
-- distinct_id: any event other than the two detection events, later than the pair that
-- made them temp users (events of the temporary session before the restore are expected).
-- The fragment {{prune_active_day}} (partition pruning) is empty when the events table has no event_date.
-- Identifiers: {events_dataset}.{events_table}, {cohort_dataset}.{cohort_table}.
SELECT
  t.distinct_id,
  ANY_VALUE(t.device_id) AS device_id,
  ANY_VALUE(t.privacy_event_at) AS privacy_event_at,
  ANY_VALUE(t.restore_event_at) AS restore_event_at,
  ANY_VALUE(t.detected_at) AS detected_at,
  ANY_VALUE(t.mixpanel_synced_at) AS mixpanel_synced_at,
  COUNT(*) AS events,
  MAX(e.event_timestamp) AS last_active_at
FROM `{cohort_dataset}.{cohort_table}` AS t
JOIN `{events_dataset}.{events_table}` AS e
  ON e.distinct_id = t.distinct_id
WHERE e.event_timestamp >= @day_start
  {prune_active_day}
  AND e.event_timestamp < @day_end
  AND e.event_name NOT IN ('impression_privacy', 'impression_restore_user_state_by_device_id')
  AND (
    COALESCE(t.restore_event_at, t.privacy_event_at) IS NULL
    OR e.event_timestamp > COALESCE(t.restore_event_at, t.privacy_event_at)
  )
GROUP BY t.distinct_id
ORDER BY events DESC, t.distinct_id
