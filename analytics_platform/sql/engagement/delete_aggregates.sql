-- Remove the partition's aggregates (only @user_ids' when @all_users is FALSE) before
-- user_aggregates.sql inserts them again.
DELETE FROM `{dataset}.user_engagement_aggregates`
WHERE as_of_date = @as_of_date
  AND (@all_users OR user_id IN UNNEST(@user_ids))
