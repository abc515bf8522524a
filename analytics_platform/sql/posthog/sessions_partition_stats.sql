-- Per-day counts and invariant violations of posthog_aggregated.sessions over
-- [@first_day, @last_day] (materialization metadata and asset checks).
SELECT
  session_date,
  COUNT(*) AS session_count,
  COUNT(*) - COUNT(DISTINCT session_id) AS duplicate_session_ids,
  COUNTIF(COALESCE(session_id, '') = '') AS null_session_ids,
  COUNTIF(session_start IS NULL OR session_end IS NULL OR session_end < session_start)
    AS end_before_start,
  COUNTIF(
    COALESCE(duration_seconds < 0, FALSE)
    OR COALESCE(event_count < 0, FALSE) OR COALESCE(pageview_count < 0, FALSE)
    OR COALESCE(screen_count < 0, FALSE) OR COALESCE(autocapture_count < 0, FALSE)
    OR COALESCE(events_created_count < 0, FALSE) OR COALESCE(quiz_started_count < 0, FALSE)
    OR COALESCE(quiz_completed_count < 0, FALSE) OR COALESCE(scroll_event_count < 0, FALSE)
    OR COALESCE(firebase_event_count < 0, FALSE)
    OR COALESCE(max_scroll_depth < 0 OR max_scroll_depth > 1, FALSE)
  ) AS negative_counts,
  COUNTIF(firebase_user_id IS NULL) AS without_firebase_user,
  COUNTIF(COALESCE(DATE(session_end) > session_date, FALSE)) AS spanning_midnight,
  SUM(event_count) AS events_aggregated
FROM `{out_dataset}.sessions`
WHERE session_date >= @first_day
  AND session_date <= @last_day
GROUP BY session_date
ORDER BY session_date
