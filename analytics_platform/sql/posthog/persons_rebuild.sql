-- posthog_aggregated.persons rebuilt from posthog_aggregated.sessions in ONE atomic MERGE:
-- every old row not in the new result is deleted and the new rows inserted together, so
-- readers never see a half-built table and a re-run gives the same rows.
-- The join never matches (new rows carry this run's @loaded_at): "ON FALSE" semantics with
-- a hash join on DuckDB (a constant FALSE makes it a quadratic nested loop there).
-- Parameters: @loaded_at TIMESTAMP.
MERGE `{out_dataset}.persons` T
USING (
  SELECT
    distinct_id,
    MAX(firebase_user_id) AS firebase_user_id,
    MIN(session_start) AS first_session_at,
    MAX(session_start) AS last_session_at,
    COUNT(*) AS session_count,
    SUM(duration_seconds) AS total_duration_seconds,
    AVG(duration_seconds) AS avg_session_duration_seconds,
    SUM(events_created_count) AS events_created_count,
    SUM(quiz_completed_count) AS quiz_completed_count,
    COUNT(DISTINCT session_date) AS active_days,
    @loaded_at AS _loaded_at
  FROM `{out_dataset}.sessions`
  WHERE distinct_id IS NOT NULL
  GROUP BY distinct_id
) S
ON T.distinct_id = S.distinct_id
  AND T._loaded_at = S._loaded_at
WHEN NOT MATCHED BY SOURCE THEN
  DELETE
WHEN NOT MATCHED BY TARGET THEN
  INSERT (
    distinct_id, firebase_user_id, first_session_at, last_session_at, session_count,
    total_duration_seconds, avg_session_duration_seconds, events_created_count,
    quiz_completed_count, active_days, _loaded_at
  )
  VALUES (
    S.distinct_id, S.firebase_user_id, S.first_session_at, S.last_session_at,
    S.session_count, S.total_duration_seconds, S.avg_session_duration_seconds,
    S.events_created_count, S.quiz_completed_count, S.active_days, S._loaded_at
  )
