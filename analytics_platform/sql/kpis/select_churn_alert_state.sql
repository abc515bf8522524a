-- Was a summary already delivered on this UTC day, and which of these learners were listed?
-- :day date, :user_ids text[]
SELECT
  EXISTS (SELECT 1 FROM weekly_kpi_churn_alerts WHERE alerted_on = :day) AS sent_today,
  ARRAY(SELECT user_id FROM weekly_kpi_churn_alerts WHERE user_id = ANY(CAST(:user_ids AS text[]))) AS already_listed
