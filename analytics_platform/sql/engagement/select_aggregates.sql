-- The partition's aggregates (rules.AGGREGATE_COLUMNS), one row per evaluated user (only
-- @user_ids' when @all_users is FALSE). Two runs of the same partition at the same time can
-- each insert their rows between the other's DELETE and INSERT (two statements): the newest
-- row of each user wins (both were computed from the same data); the next run's DELETE
-- removes the leftovers.
SELECT user_id, has_goal, event_count, service_event_count, aligned_event_count,
       max_aligned_foreground_ms, max_app_sessions_week0,
       f0, f1, f2, f3, f4, f5, f6, f7, f8, f9,
       has_tier1_event, has_tier2_event
FROM `{dataset}.user_engagement_aggregates`
WHERE as_of_date = @as_of_date
  AND (@all_users OR user_id IN UNNEST(@user_ids))
QUALIFY ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY computed_at DESC) = 1
