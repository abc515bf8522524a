-- posthog_aggregated.persons rebuilt from posthog_aggregated.sessions in ONE atomic MERGE:
-- every old row not in the new result is deleted and the new rows inserted together, so
-- readers never see a half-built table and a re-run gives the same rows.
-- The join never matches (new rows carry this run's @loaded_at): "ON FALSE" semantics with
-- a hash join on DuckDB (a constant FALSE makes it a quadratic nested loop there).
--
-- A person is PostHog's person_id when PostHog's persons export maps the session's
-- distinct_id to one (person_map fragment: persons_map_export.sql, else persons_map_none.sql
-- - then every distinct_id is its own person, person_id NULL). All of a person's distinct
-- ids (anonymous sessions before identification included) aggregate into one row, whose
-- distinct_id is the one of the person's latest session. A session counts once even if the
-- table held it twice (the latest load wins).
-- Parameters: @loaded_at TIMESTAMP.
MERGE `{out_dataset}.persons` T
USING (
  WITH person_map AS (
{person_map}
  ),

  sessions_once AS (
    SELECT *
    FROM (
      SELECT
        session_id, distinct_id, firebase_user_id, session_date, session_start,
        duration_seconds, events_created_count, quiz_completed_count,
        ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY _loaded_at DESC, session_date) AS copy_rank
      FROM `{out_dataset}.sessions`
      WHERE distinct_id IS NOT NULL
    )
    WHERE copy_rank = 1
  ),

  keyed AS (
    SELECT
      s.*,
      m.person_id,
      COALESCE(CONCAT('person:', m.person_id), CONCAT('distinct_id:', s.distinct_id)) AS person_key
    FROM sessions_once s
    LEFT JOIN person_map m ON m.distinct_id = s.distinct_id
  )

  SELECT
    -- the distinct_id of the person's latest session (ties: the greatest id)
    SUBSTR(
      MAX(CONCAT(LPAD(CAST(UNIX_MICROS(session_start) AS STRING), 20, '0'), distinct_id)),
      21
    ) AS distinct_id,
    MAX(person_id) AS person_id,
    COUNT(DISTINCT distinct_id) AS distinct_id_count,
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
  FROM keyed
  GROUP BY person_key
) S
ON T.distinct_id = S.distinct_id
  AND T._loaded_at = S._loaded_at
WHEN NOT MATCHED BY SOURCE THEN
  DELETE
WHEN NOT MATCHED BY TARGET THEN
  INSERT (
    distinct_id, firebase_user_id, first_session_at, last_session_at, session_count,
    total_duration_seconds, avg_session_duration_seconds, events_created_count,
    quiz_completed_count, active_days, _loaded_at, person_id, distinct_id_count
  )
  VALUES (
    S.distinct_id, S.firebase_user_id, S.first_session_at, S.last_session_at,
    S.session_count, S.total_duration_seconds, S.avg_session_duration_seconds,
    S.events_created_count, S.quiz_completed_count, S.active_days, S._loaded_at,
    S.person_id, S.distinct_id_count
  )
