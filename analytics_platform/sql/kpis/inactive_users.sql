-- Inactive learners and the aggregates the P/S models need, in ONE pass and without joins:
-- every activity row, exam score and goal of every user is put in one stream and grouped
-- by user, so the plan is a scan per table plus one hash aggregate whatever the
-- planner's estimates (a join on the HAVING-filtered set was estimated at 1 row and
-- turned into nested loops).  PostgreSQL (application database).  Parameters:
--   :as_of           timestamptz  only activity strictly before it counts
--   :lookback_start  timestamptz  as_of - lookback_days (also the start of the score window)
--   :inactive_until  timestamptz  as_of - threshold_days
-- The session_activity placeholder below is replaced by session_activity.sql when the
-- session table exists, else by nothing (the table is optional).
-- Bounded by the lookback: only activity in [lookback_start, as_of) is read. A learner
-- whose last activity is older is not inactive by definition (last_activity >=
-- lookback_start), and for every other learner the latest activity is inside the bound, so
-- the result is that of the unbounded scan while an index on the activity columns is read
-- as a range, not the whole history, on every daily and sensor-triggered run.
WITH stream AS (
    -- at: an activity instant (NULL for goals); score: an exam score; target: a goal
    SELECT user_id, COALESCE(updated_at, created_at) AS at, score, CAST(NULL AS double precision) AS target
    FROM exam_results
    WHERE user_id IS NOT NULL
      AND COALESCE(updated_at, created_at) < :as_of
      AND COALESCE(updated_at, created_at) >= :lookback_start
    UNION ALL
    SELECT user_id, last_seen_at, NULL, NULL
    FROM features_topic_daily
    WHERE user_id IS NOT NULL
      AND last_seen_at < :as_of
      AND last_seen_at >= :lookback_start
    UNION ALL
    SELECT student_id, completed_at, NULL, NULL
    FROM attempt
    WHERE student_id IS NOT NULL
      AND completed_at < :as_of
      AND completed_at >= :lookback_start
    {session_activity}
    UNION ALL
    SELECT user_id, NULL, NULL, target_score
    FROM interest_goal
    WHERE user_id IS NOT NULL
      AND target_score IS NOT NULL
),
per_user AS (
    SELECT user_id,
           max(at) AS last_activity,
           -- the user's non-NULL scores with COALESCE(updated_at, created_at) in [lookback_start, as_of)
           count(score)        FILTER (WHERE at >= :lookback_start) AS n_scores,
           avg(score)          FILTER (WHERE at >= :lookback_start) AS score_mean,
           stddev_samp(score)  FILTER (WHERE at >= :lookback_start) AS score_stddev,
           sum(score)          FILTER (WHERE at >= :lookback_start) AS score_sum,
           count(score)        FILTER (WHERE at >= :lookback_start
                                         AND score = CAST('NaN' AS double precision)) AS n_nan,
           min(score)          FILTER (WHERE at >= :lookback_start
                                         AND score <> CAST('NaN' AS double precision)) AS score_min,
           max(score)          FILTER (WHERE at >= :lookback_start
                                         AND score <> CAST('NaN' AS double precision)) AS score_max,
           -- the highest goal; a NaN target is counted (it fails the user)
           max(target)         FILTER (WHERE target <> CAST('NaN' AS double precision)) AS goal_target,
           count(target)       FILTER (WHERE target = CAST('NaN' AS double precision))  AS goal_nan
    FROM stream
    GROUP BY user_id
)
SELECT user_id, last_activity, n_scores, score_mean, score_stddev, score_sum, n_nan,
       score_min, score_max, goal_target, goal_nan
FROM per_user
WHERE last_activity >= :lookback_start
  AND last_activity <= :inactive_until
ORDER BY user_id
