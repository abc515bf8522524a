-- Size and invariant violations of posthog_aggregated.persons (metadata and checks).
SELECT
  COUNT(*) AS person_count,
  COUNT(*) - COUNT(DISTINCT distinct_id) AS duplicate_distinct_ids,
  COUNTIF(distinct_id IS NULL) AS null_distinct_ids,
  COUNTIF(
    COALESCE(session_count < 0, FALSE) OR COALESCE(total_duration_seconds < 0, FALSE)
    OR COALESCE(avg_session_duration_seconds < 0, FALSE)
    OR COALESCE(events_created_count < 0, FALSE) OR COALESCE(quiz_completed_count < 0, FALSE)
    OR COALESCE(active_days < 0, FALSE)
  ) AS negative_counts,
  COUNTIF(COALESCE(last_session_at < first_session_at, FALSE)) AS last_before_first,
  COUNTIF(firebase_user_id IS NOT NULL) AS with_firebase_user,
  COUNTIF(COALESCE(distinct_id_count > 1, FALSE)) AS with_several_distinct_ids,
  COUNT(person_id) - COUNT(DISTINCT person_id) AS duplicate_person_ids,
  COALESCE(SUM(session_count), 0) AS sessions_counted
FROM `{out_dataset}.persons`
