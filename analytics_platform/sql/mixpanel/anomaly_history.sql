-- Windows already recorded for these events since @since (cooldown state and "at most once").
SELECT event_name, window_start, alert_status
FROM `{dataset}.{anomalies}`
WHERE event_name IN UNNEST(@events)
  AND window_start >= @since
ORDER BY event_name, window_start
