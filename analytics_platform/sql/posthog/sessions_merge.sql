-- posthog_aggregated.sessions for the UTC days [@first_day, @last_day], rebuilt as ONE
-- atomic MERGE: every existing row of those days is deleted and the new rows are inserted
-- in the same statement, so a re-run replaces each day as a unit.
--
-- The join condition never holds (the new rows carry this run's @loaded_at, which no
-- existing row has), so the MERGE behaves exactly like BigQuery's documented
-- "ON FALSE" partition-replace idiom; the equalities are there so that DuckDB plans a hash
-- join instead of a nested loop over (new rows x whole table), which is quadratic.
--
-- Identifiers: {posthog_dataset}, {firebase_dataset}, {out_dataset} (validated).
-- Fragments (render_sql fragments, filled by analytics_platform.posthog.store.
-- build_sessions_merge_sql): export_cte = sessions_export_cte.sql, or select_no_export.sql
-- when the export is absent or carries nothing; carry_select / carry_insert / carry_values =
-- the carried columns' select, insert and values lists, built from validated column names
-- only (never from values).
-- Parameters (all bound):
--   @first_day, @last_day        DATE       the partitions written (inclusive)
--   @range_start, @range_end     TIMESTAMP  [first_day 00:00, last_day + 1 day 00:00)
--   @read_start, @read_end       TIMESTAMP  range widened by max_session_days (run config) on both sides
--   @fb_start_us, @fb_end_us     INT64      Firebase event_timestamp bounds (microseconds)
--   @fb_first_date, @fb_last_date STRING    Firebase event_date bounds (YYYYMMDD, +-1 day margin)
--   @event_created_event, @quiz_started_event, @quiz_completed_event, @scroll_event  STRING
--   @loaded_at                   TIMESTAMP
MERGE `{out_dataset}.sessions` T
USING (
  WITH window_events AS (
    SELECT
      JSON_VALUE(properties, '$."$session_id"') AS session_id,
      distinct_id,
      COALESCE(event, '') AS event,
      `timestamp` AS ts,
      -- scroll depth of one event: touch_y / screen_height clamped to [0, 1]; NULL when the
      -- event is not a scroll event or has no usable coordinates (see docs/posthog.md).
      CASE
        WHEN event = @scroll_event THEN
          SAFE_CAST(JSON_VALUE(properties, '$.touch_y') AS FLOAT64)
      END AS touch_y,
      CASE
        WHEN event = @scroll_event THEN
          SAFE_CAST(JSON_VALUE(properties, '$.screen_height') AS FLOAT64)
      END AS screen_height
    FROM `{posthog_dataset}.events`
    WHERE `timestamp` >= @read_start
      AND `timestamp` < @read_end
  ),

  session_events AS (
    SELECT *
    FROM window_events
    WHERE session_id IS NOT NULL AND session_id != ''
  ),

  -- one pass over the events: a session belongs to the UTC day of its first event (HAVING);
  -- the read window reaches max_session_days past the run's days, so a session that runs
  -- past midnight is complete, and one that started before the run's first day is seen
  -- starting there (and left out) instead of being mistaken for a session of that day.
  agg AS (
    SELECT
      session_id,
      -- distinct_id of the session's latest event (ties: the greatest id), deterministic
      SUBSTR(
        MAX(CONCAT(LPAD(CAST(UNIX_MICROS(ts) AS STRING), 20, '0'), distinct_id)),
        21
      ) AS distinct_id,
      MIN(ts) AS session_start,
      MAX(ts) AS session_end,
      COUNT(*) AS event_count,
      COUNTIF(event = '$pageview') AS pageview_count,
      COUNTIF(event = '$screen') AS screen_count,
      COUNTIF(event = '$autocapture') AS autocapture_count,
      COUNTIF(event = @event_created_event) AS events_created_count,
      COUNTIF(event = @quiz_started_event) AS quiz_started_count,
      COUNTIF(event = @quiz_completed_event) AS quiz_completed_count,
      COUNTIF(event = @scroll_event) AS scroll_event_count,
      MAX(
        CASE
          WHEN touch_y IS NOT NULL
           AND screen_height IS NOT NULL
           AND NOT IS_NAN(touch_y) AND NOT IS_INF(touch_y)
           AND NOT IS_NAN(screen_height) AND NOT IS_INF(screen_height)
           AND screen_height > 0
          THEN LEAST(GREATEST(touch_y / screen_height, 0.0), 1.0)
        END
      ) AS max_scroll_depth
    FROM session_events
    GROUP BY session_id
    HAVING MIN(ts) >= @range_start AND MIN(ts) < @range_end
  ),

  fb_users AS (
    SELECT user_id, created_at, country
    FROM (
      SELECT
        user_id,
        created_at,
        country,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at, country) AS rn
      FROM `{firebase_dataset}.users`
      WHERE user_id IN (SELECT distinct_id FROM agg)
    )
    WHERE rn = 1
  ),

  fb_counts AS (
    SELECT a.session_id, COUNT(*) AS firebase_event_count
    FROM agg a
    JOIN `{firebase_dataset}.events` fe
      ON fe.user_id = a.distinct_id
     AND fe.event_timestamp >= UNIX_MICROS(a.session_start)
     AND fe.event_timestamp <= UNIX_MICROS(a.session_end)
    WHERE fe.event_timestamp >= @fb_start_us
      AND fe.event_timestamp <= @fb_end_us
      AND fe.event_date >= @fb_first_date
      AND fe.event_date <= @fb_last_date
    GROUP BY a.session_id
  ),

  export AS (
{export_cte}
  )

  SELECT
    a.session_id,
    a.distinct_id,
    u.user_id AS firebase_user_id,
    DATE(a.session_start) AS session_date,
    a.session_start,
    a.session_end,
    TIMESTAMP_DIFF(a.session_end, a.session_start, MICROSECOND) / 1000000.0 AS duration_seconds,
    a.event_count,
    a.pageview_count,
    a.screen_count,
    a.autocapture_count,
    a.events_created_count,
    a.quiz_started_count,
    a.quiz_completed_count,
    a.scroll_event_count,
    a.max_scroll_depth,
    CASE WHEN u.user_id IS NULL THEN NULL ELSE COALESCE(c.firebase_event_count, 0) END
      AS firebase_event_count,
    u.created_at AS user_created_at,
    u.country,
    @loaded_at AS _loaded_at
    {carry_select}
  FROM agg a
  LEFT JOIN fb_users u ON u.user_id = a.distinct_id
  LEFT JOIN fb_counts c ON c.session_id = a.session_id
  LEFT JOIN export x ON x.session_id = a.session_id
) S
ON T.session_id = S.session_id
  AND T.session_date = S.session_date
  AND T._loaded_at = S._loaded_at
WHEN NOT MATCHED BY SOURCE AND T.session_date >= @first_day AND T.session_date <= @last_day THEN
  DELETE
WHEN NOT MATCHED BY TARGET THEN
  INSERT (
    session_id, distinct_id, firebase_user_id, session_date, session_start, session_end,
    duration_seconds, event_count, pageview_count, screen_count, autocapture_count,
    events_created_count, quiz_started_count, quiz_completed_count, scroll_event_count,
    max_scroll_depth, firebase_event_count, user_created_at, country, _loaded_at
    {carry_insert}
  )
  VALUES (
    S.session_id, S.distinct_id, S.firebase_user_id, S.session_date, S.session_start,
    S.session_end, S.duration_seconds, S.event_count, S.pageview_count, S.screen_count,
    S.autocapture_count, S.events_created_count, S.quiz_started_count,
    S.quiz_completed_count, S.scroll_event_count, S.max_scroll_depth,
    S.firebase_event_count, S.user_created_at, S.country, S._loaded_at
    {carry_values}
  )
