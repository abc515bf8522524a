-- PostHog events per UTC day of [@range_start, @range_end): how many distinct events there
-- are (each uuid once: the batch export may append an event twice), how many extra copies
-- were left out, how many carry no $session_id (not sessions: counted, never loaded) and
-- how many have a `properties` text that is not valid JSON (kept out of the sessions,
-- counted there and not as events without $session_id).
-- Fragment properties_json: properties_from_json.sql or properties_from_string.sql.
SELECT
  DATE(ts) AS day,
  COUNTIF(uuid IS NULL OR copy_rank = 1) AS events_in_day,
  COUNTIF(uuid IS NOT NULL AND copy_rank > 1) AS duplicate_event_rows,
  COUNTIF((uuid IS NULL OR copy_rank = 1) AND NOT malformed AND COALESCE(session_id, '') = '')
    AS events_without_session_id,
  COUNTIF((uuid IS NULL OR copy_rank = 1) AND malformed) AS events_with_malformed_properties
FROM (
  SELECT
    ts,
    uuid,
    copy_rank,
    props IS NULL AND has_properties AS malformed,
    JSON_VALUE(props, '$."$session_id"') AS session_id
  FROM (
    SELECT
      `timestamp` AS ts,
      uuid,
      properties IS NOT NULL AS has_properties,
      {properties_json} AS props,
      ROW_NUMBER() OVER (PARTITION BY uuid ORDER BY bq_ingested_timestamp DESC) AS copy_rank
    FROM `{posthog_dataset}.events`
    WHERE `timestamp` >= @range_start
      AND `timestamp` < @range_end
  )
)
GROUP BY day
ORDER BY day
