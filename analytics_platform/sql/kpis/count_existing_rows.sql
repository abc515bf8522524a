-- How many of the given users already have their week's row (dry run: would update vs insert).
-- :week_start date, :user_ids text[]
SELECT count(*) AS existing
FROM weekly_kpi AS w
JOIN unnest(CAST(:user_ids AS text[])) AS u(user_id) ON u.user_id = w.user_id
WHERE w.week_start = :week_start
