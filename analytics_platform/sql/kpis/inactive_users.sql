-- Inactive learners and the aggregates the P/S models need, in one set-based statement.
-- PostgreSQL (application database).  Parameters:
--   :as_of           timestamptz  only activity strictly before it counts
--   :lookback_start  timestamptz  as_of - lookback_days
--   :inactive_until  timestamptz  as_of - threshold_days
-- The session_activity placeholder below is replaced by session_activity.sql when public.session exists, else
-- by nothing (the table is optional).
WITH activity AS (
    SELECT user_id, max(COALESCE(updated_at, created_at)) AS last_at
    FROM exam_results
    WHERE user_id IS NOT NULL
      AND COALESCE(updated_at, created_at) < :as_of
    GROUP BY user_id
    UNION ALL
    SELECT user_id, max(last_seen_at)
    FROM features_topic_daily
    WHERE user_id IS NOT NULL
      AND last_seen_at < :as_of
    GROUP BY user_id
    UNION ALL
    SELECT student_id, max(completed_at)
    FROM attempt
    WHERE student_id IS NOT NULL
      AND completed_at < :as_of
    GROUP BY student_id
    {session_activity}
),
last_activity AS (
    SELECT user_id, max(last_at) AS last_activity
    FROM activity
    GROUP BY user_id
),
inactive AS (
    SELECT user_id, last_activity
    FROM last_activity
    WHERE last_activity >= :lookback_start
      AND last_activity <= :inactive_until
),
scores AS (
    -- the user's non-NULL scores with COALESCE(updated_at, created_at) in [lookback_start, as_of)
    SELECT e.user_id,
           count(e.score)                                                AS n_scores,
           avg(e.score)                                                  AS score_mean,
           stddev_samp(e.score)                                          AS score_stddev,
           sum(e.score)                                                  AS score_sum,
           count(*) FILTER (WHERE e.score = CAST('NaN' AS double precision)) AS n_nan,
           min(e.score) FILTER (WHERE e.score <> CAST('NaN' AS double precision)) AS score_min,
           max(e.score) FILTER (WHERE e.score <> CAST('NaN' AS double precision)) AS score_max
    FROM exam_results AS e
    JOIN inactive AS i ON i.user_id = e.user_id
    WHERE e.score IS NOT NULL
      AND COALESCE(e.updated_at, e.created_at) >= :lookback_start
      AND COALESCE(e.updated_at, e.created_at) < :as_of
    GROUP BY e.user_id
),
goals AS (
    SELECT g.user_id,
           max(g.target_score) FILTER (WHERE g.target_score <> CAST('NaN' AS double precision)) AS goal_target,
           count(*) FILTER (WHERE g.target_score = CAST('NaN' AS double precision))            AS goal_nan
    FROM interest_goal AS g
    JOIN inactive AS i ON i.user_id = g.user_id
    WHERE g.target_score IS NOT NULL
    GROUP BY g.user_id
)
SELECT i.user_id,
       i.last_activity,
       COALESCE(s.n_scores, 0) AS n_scores,
       s.score_mean,
       s.score_stddev,
       s.score_sum,
       COALESCE(s.n_nan, 0)    AS n_nan,
       s.score_min,
       s.score_max,
       g.goal_target,
       COALESCE(g.goal_nan, 0) AS goal_nan
FROM inactive AS i
LEFT JOIN scores AS s ON s.user_id = i.user_id
LEFT JOIN goals AS g ON g.user_id = i.user_id
ORDER BY i.user_id
