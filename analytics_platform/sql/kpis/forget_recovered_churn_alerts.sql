-- Listed learners who are no longer at high churn risk in this run (S back at or below the
-- threshold, active again, or out of the inactivity window): forgotten, so that their next
-- crossing is reported again.
-- :high_ids text[]
DELETE FROM weekly_kpi_churn_alerts WHERE NOT (user_id = ANY(CAST(:high_ids AS text[])))
