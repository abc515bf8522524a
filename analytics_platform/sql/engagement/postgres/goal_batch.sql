-- The goal tables of one run, as the warehouse aggregation's batch (engagement/tables.py
-- GOALS_BATCH_SCHEMA): each (requested) user's goals with the goal's sub-category and tier,
-- and each service app with its sub-categories (NULL: an app in none).
-- :all_users boolean, :user_ids text[]
SELECT 'user_goal' AS kind, ug.user_id AS key,
       CAST(g.sub_category_id AS bigint) AS sub_category_id, CAST(ug.tier AS bigint) AS tier
FROM user_goals ug
LEFT JOIN goals g ON g.id = ug.goal_id
WHERE :all_users OR ug.user_id = ANY(:user_ids)
UNION ALL
SELECT 'app', a.package_name, CAST(agsc.sub_category_id AS bigint), CAST(NULL AS bigint)
FROM apps a
LEFT JOIN app_goal_sub_categories agsc ON agsc.app_id = a.id
