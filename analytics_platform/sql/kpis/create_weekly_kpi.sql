-- weekly_kpi is owned by the application (the daily KPI batch writes it).  Created here
-- only when it is missing (a fresh database, the demo), with the schema of the spec.
CREATE TABLE IF NOT EXISTS weekly_kpi (
    user_id    TEXT        NOT NULL,
    week_start DATE        NOT NULL,
    kpis       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    updated_at TIMESTAMPTZ,
    PRIMARY KEY (user_id, week_start)
);
CREATE INDEX IF NOT EXISTS weekly_kpi_updated_at_idx ON weekly_kpi (updated_at);
