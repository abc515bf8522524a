-- PostHog events per UTC day of [@range_start, @range_end): how many there are and how
-- many carry no $session_id (those are not sessions: counted, never loaded).
SELECT
  DATE(ts) AS day,
  COUNT(*) AS events_in_day,
  COUNTIF(COALESCE(session_id, '') = '') AS events_without_session_id
FROM (
  SELECT `timestamp` AS ts, JSON_VALUE(properties, '$."$session_id"') AS session_id
  FROM `{posthog_dataset}.events`
  WHERE `timestamp` >= @range_start
    AND `timestamp` < @range_end
)
GROUP BY day
ORDER BY day
