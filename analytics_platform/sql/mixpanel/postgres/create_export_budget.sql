-- The Mixpanel export budget ledger (application PostgreSQL): one row per export query
-- (every HTTP request to /api/2.0/export, retries included) of every run, process and pod.
-- A query is recorded BEFORE it is sent, under pg_advisory_xact_lock, so concurrent runs
-- see each other (resources/export_budget.py).  Rows older than 7 days are pruned.
-- Idempotent: run by PostgresExportBudget.ensure() (to be folded into a migration).
CREATE TABLE IF NOT EXISTS mixpanel_export_budget (
    id          BIGSERIAL PRIMARY KEY,
    queried_at  TIMESTAMPTZ NOT NULL,
    purpose     TEXT NOT NULL CHECK (purpose IN ('refresh', 'late_sweep', 'backfill')),
    run_id      TEXT,
    request     TEXT
);
CREATE INDEX IF NOT EXISTS mixpanel_export_budget_queried_at ON mixpanel_export_budget (queried_at);
