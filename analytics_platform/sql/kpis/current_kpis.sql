-- The current P and S of a few users' rows for one week (the old -> new sample of the report;
-- the write itself never reads kpis into Python, it merges in the database).
-- :week_start date, :user_ids text[]
SELECT w.user_id,
       w.kpis -> 'P' AS p_old,
       w.kpis -> 'S' AS s_old
FROM weekly_kpi AS w
JOIN unnest(CAST(:user_ids AS text[])) AS u(user_id) ON u.user_id = w.user_id
WHERE w.week_start = :week_start
