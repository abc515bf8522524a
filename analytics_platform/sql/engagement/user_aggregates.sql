-- Per-user aggregates for the signal and milestone rules (engagement/rules.py) as of T
-- (@as_of, exclusive), inserted into the partition @as_of_date of user_engagement_aggregates.
-- Set-based over every evaluated user at once (users with a goal or an event before T; with
-- @all_users FALSE only @user_ids), one scan of the mirror; no per-user query.
-- Week k is [b(k+1), b(k)) with b0 = T and b(k) = T - 7k days (@b1 .. @b10): an event at
-- exactly T - 7 days is in week 0.
-- The goal tables of the run (read from the application PostgreSQL) are the batch
-- `{batch_dataset}.{batch}` (Warehouse.insert_from_batch): rows of kind 'user_goal' (key =
-- user_id, the goal's sub_category_id, tier) and 'app' (key = package_name of a service app,
-- one row per sub-category, sub_category_id NULL for an app in none).
-- Aggregated per user and app first (the heavy part, over the events alone), then the small
-- per-(user, app) rows are joined with the alignment: an app in two of a user's
-- sub-categories still counts its events once.
INSERT INTO `{dataset}.user_engagement_aggregates` (
  user_id, has_goal, event_count, service_event_count, aligned_event_count,
  max_aligned_foreground_ms, max_app_sessions_week0,
  f0, f1, f2, f3, f4, f5, f6, f7, f8, f9,
  has_tier1_event, has_tier2_event, as_of_date, computed_at
)
WITH
user_subs AS (
  SELECT `key` AS user_id, sub_category_id, tier
  FROM `{batch_dataset}.{batch}`
  WHERE kind = 'user_goal'
),
app_subs AS (
  SELECT DISTINCT `key` AS app_id, sub_category_id
  FROM `{batch_dataset}.{batch}`
  WHERE kind = 'app' AND sub_category_id IS NOT NULL
),
service_apps AS (
  SELECT DISTINCT `key` AS app_id FROM `{batch_dataset}.{batch}` WHERE kind = 'app'
),
alignment AS (
  SELECT u.user_id, a.app_id,
         LOGICAL_OR(u.tier = 1) AS tier1,
         LOGICAL_OR(u.tier = 2) AS tier2
  FROM user_subs AS u
  JOIN app_subs AS a ON a.sub_category_id = u.sub_category_id
  GROUP BY u.user_id, a.app_id
),
per_app AS (
  SELECT
    user_id,
    app_id,
    COUNT(*) AS event_count,
    MAX(foreground_time_ms) AS max_fg,
    SUM(IF(event_timestamp >= @b1, foreground_time_ms, 0)) AS f0,
    SUM(IF(event_timestamp >= @b2 AND event_timestamp < @b1, foreground_time_ms, 0)) AS f1,
    SUM(IF(event_timestamp >= @b3 AND event_timestamp < @b2, foreground_time_ms, 0)) AS f2,
    SUM(IF(event_timestamp >= @b4 AND event_timestamp < @b3, foreground_time_ms, 0)) AS f3,
    SUM(IF(event_timestamp >= @b5 AND event_timestamp < @b4, foreground_time_ms, 0)) AS f4,
    SUM(IF(event_timestamp >= @b6 AND event_timestamp < @b5, foreground_time_ms, 0)) AS f5,
    SUM(IF(event_timestamp >= @b7 AND event_timestamp < @b6, foreground_time_ms, 0)) AS f6,
    SUM(IF(event_timestamp >= @b8 AND event_timestamp < @b7, foreground_time_ms, 0)) AS f7,
    SUM(IF(event_timestamp >= @b9 AND event_timestamp < @b8, foreground_time_ms, 0)) AS f8,
    SUM(IF(event_timestamp >= @b10 AND event_timestamp < @b9, foreground_time_ms, 0)) AS f9,
    COUNT(DISTINCT IF(event_timestamp >= @b1, session_id, NULL)) AS sessions_week0
  FROM `{dataset}.firestore_app_usage_events`
  WHERE event_date <= DATE(@as_of)  -- partition pruning (the exact bound is the next line)
    AND event_timestamp < @as_of
    AND (@all_users OR user_id IN UNNEST(@user_ids))
  GROUP BY user_id, app_id
),
per_user AS (
  SELECT
    p.user_id,
    SUM(p.event_count) AS event_count,
    SUM(IF(s.app_id IS NOT NULL, p.event_count, 0)) AS service_event_count,
    SUM(IF(al.app_id IS NOT NULL, p.event_count, 0)) AS aligned_event_count,
    MAX(IF(al.app_id IS NOT NULL, p.max_fg, 0)) AS max_aligned_foreground_ms,
    MAX(IF(al.app_id IS NOT NULL, p.sessions_week0, 0)) AS max_app_sessions_week0,
    SUM(IF(al.app_id IS NOT NULL, p.f0, 0)) AS f0,
    SUM(IF(al.app_id IS NOT NULL, p.f1, 0)) AS f1,
    SUM(IF(al.app_id IS NOT NULL, p.f2, 0)) AS f2,
    SUM(IF(al.app_id IS NOT NULL, p.f3, 0)) AS f3,
    SUM(IF(al.app_id IS NOT NULL, p.f4, 0)) AS f4,
    SUM(IF(al.app_id IS NOT NULL, p.f5, 0)) AS f5,
    SUM(IF(al.app_id IS NOT NULL, p.f6, 0)) AS f6,
    SUM(IF(al.app_id IS NOT NULL, p.f7, 0)) AS f7,
    SUM(IF(al.app_id IS NOT NULL, p.f8, 0)) AS f8,
    SUM(IF(al.app_id IS NOT NULL, p.f9, 0)) AS f9,
    LOGICAL_OR(COALESCE(al.tier1, FALSE)) AS has_tier1_event,
    LOGICAL_OR(COALESCE(al.tier2, FALSE)) AS has_tier2_event
  FROM per_app AS p
  LEFT JOIN service_apps AS s ON s.app_id = p.app_id
  LEFT JOIN alignment AS al ON al.user_id = p.user_id AND al.app_id = p.app_id
  GROUP BY p.user_id
),
goal_users AS (
  SELECT DISTINCT user_id FROM user_subs
)
SELECT
  COALESCE(p.user_id, g.user_id) AS user_id,
  g.user_id IS NOT NULL AS has_goal,
  COALESCE(p.event_count, 0) AS event_count,
  COALESCE(p.service_event_count, 0) AS service_event_count,
  COALESCE(p.aligned_event_count, 0) AS aligned_event_count,
  COALESCE(p.max_aligned_foreground_ms, 0) AS max_aligned_foreground_ms,
  COALESCE(p.max_app_sessions_week0, 0) AS max_app_sessions_week0,
  COALESCE(p.f0, 0) AS f0, COALESCE(p.f1, 0) AS f1, COALESCE(p.f2, 0) AS f2,
  COALESCE(p.f3, 0) AS f3, COALESCE(p.f4, 0) AS f4, COALESCE(p.f5, 0) AS f5,
  COALESCE(p.f6, 0) AS f6, COALESCE(p.f7, 0) AS f7, COALESCE(p.f8, 0) AS f8,
  COALESCE(p.f9, 0) AS f9,
  COALESCE(p.has_tier1_event, FALSE) AS has_tier1_event,
  COALESCE(p.has_tier2_event, FALSE) AS has_tier2_event,
  @as_of_date AS as_of_date,
  @computed_at AS computed_at
FROM per_user AS p
FULL JOIN goal_users AS g ON g.user_id = p.user_id
