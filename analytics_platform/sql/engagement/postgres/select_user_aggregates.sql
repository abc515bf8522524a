-- The partition's stored aggregates (rules.AGGREGATE_COLUMNS), one row per evaluated user.
-- :as_of_date date, :all_users boolean, :user_ids text[]
SELECT user_id, has_goal, event_count, service_event_count, aligned_event_count,
       max_aligned_foreground_ms, max_app_sessions_week0,
       f0, f1, f2, f3, f4, f5, f6, f7, f8, f9,
       has_tier1_event, has_tier2_event
FROM user_engagement_aggregates
WHERE as_of_date = CAST(:as_of_date AS date) AND (:all_users OR user_id = ANY(:user_ids))
