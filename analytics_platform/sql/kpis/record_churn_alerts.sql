-- The learners a delivered summary listed.
-- :user_ids text[], :s float8[], :day date, :run_id text
INSERT INTO weekly_kpi_churn_alerts (user_id, alerted_on, s, run_id)
SELECT u, :day, s, :run_id FROM unnest(CAST(:user_ids AS text[]), CAST(:s AS float8[])) AS t(u, s)
ON CONFLICT (user_id) DO UPDATE SET alerted_on = EXCLUDED.alerted_on, s = EXCLUDED.s,
    run_id = EXCLUDED.run_id, alerted_at = now()
