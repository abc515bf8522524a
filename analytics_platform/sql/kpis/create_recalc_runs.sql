-- Bookkeeping owned by analytics_platform: one row per (non-dry) run of app_db/weekly_kpi,
-- written in the SAME transaction as its weekly_kpi writes.  `written_at` is the
-- updated_at value the run stamped on every row it wrote, so the external-write sensor can
-- tell this asset's writes from anyone else's without a race. The alert columns are no longer
-- written (the summary bookkeeping is weekly_kpi_churn_alerts) and kept for existing tables.
CREATE TABLE IF NOT EXISTS weekly_kpi_recalc_runs (
    run_id          TEXT        PRIMARY KEY,
    written_at      TIMESTAMPTZ NOT NULL,
    as_of           TIMESTAMPTZ NOT NULL,
    week_start      DATE        NOT NULL,
    threshold_days  INTEGER     NOT NULL,
    processed       INTEGER     NOT NULL,
    failed          INTEGER     NOT NULL,
    inserted        INTEGER     NOT NULL,
    updated         INTEGER     NOT NULL,
    alert_key       TEXT,
    alert_sent_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS weekly_kpi_recalc_runs_written_at_idx
    ON weekly_kpi_recalc_runs (written_at);
CREATE INDEX IF NOT EXISTS weekly_kpi_recalc_runs_alert_key_idx
    ON weekly_kpi_recalc_runs (alert_key);
