-- Record a run's high-churn alert key, and when the summary was delivered.
-- :alert_key text, :sent boolean, :run_id text
UPDATE weekly_kpi_recalc_runs
SET alert_key = :alert_key,
    alert_sent_at = CASE WHEN :sent THEN clock_timestamp() ELSE alert_sent_at END
WHERE run_id = :run_id
