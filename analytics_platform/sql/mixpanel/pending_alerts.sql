-- Every alert not delivered yet, whatever its age (a run retries them all).
SELECT
  event_name, window_start, window_end, window_minutes, event_count, threshold, channel,
  detected_at, alert_status, alerted_at, sample, delivery_attempts, last_error
FROM `{dataset}.{anomalies}`
WHERE alert_status = 'pending'
ORDER BY window_start, event_name
