-- Did some run already deliver the high-churn summary with this key?
-- :k text
SELECT EXISTS (
    SELECT 1 FROM weekly_kpi_recalc_runs
    WHERE alert_key = :k AND alert_sent_at IS NOT NULL
)
