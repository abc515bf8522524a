-- One bookkeeping row per run, in the run's transaction (table: migrations/versions/0002_kpis_bookkeeping.py).
INSERT INTO weekly_kpi_recalc_runs
    (run_id, written_at, as_of, week_start, threshold_days, processed, failed, inserted, updated, alert_key)
VALUES
    (:run_id, :written_at, :as_of, :week_start, :threshold_days, :processed, :failed, :inserted, :updated, :alert_key)
ON CONFLICT (run_id) DO UPDATE
    SET written_at = EXCLUDED.written_at,
        as_of = EXCLUDED.as_of,
        week_start = EXCLUDED.week_start,
        threshold_days = EXCLUDED.threshold_days,
        processed = EXCLUDED.processed,
        failed = EXCLUDED.failed,
        inserted = EXCLUDED.inserted,
        updated = EXCLUDED.updated,
        alert_key = EXCLUDED.alert_key
