-- Milestone rows of one as_of_date with a tier milestone but no completed goal setting.
-- :d date
SELECT count(*) FROM user_milestones
WHERE as_of_date = :d AND NOT goal_setting_complete AND (
    tier1_app_registered OR tier1_app_engaged OR tier1_app_engagement_dropoff
    OR tier1_app_retained OR tier1_app_retention_dropoff
    OR tier2_app_registered OR tier2_app_engaged OR tier2_app_engagement_dropoff
    OR tier2_app_retained OR tier2_app_retention_dropoff
)
