-- The partition's aggregates (rules.AGGREGATE_COLUMNS), one row per evaluated user (only
-- @user_ids' when @all_users is FALSE).
SELECT user_id, has_goal, event_count, service_event_count, aligned_event_count,
       max_aligned_foreground_ms, max_app_sessions_week0,
       f0, f1, f2, f3, f4, f5, f6, f7, f8, f9,
       has_tier1_event, has_tier2_event
FROM `{dataset}.user_engagement_aggregates`
WHERE as_of_date = @as_of_date
  AND (@all_users OR user_id IN UNNEST(@user_ids))
