"""kpis bookkeeping: weekly_kpi_recalc_runs and weekly_kpi_churn_alerts (weekly_kpi itself
belongs to the application and is not migrated here).

weekly_kpi_recalc_runs: one row per (non-dry) run of app_db/weekly_kpi, written in the SAME
transaction as its weekly_kpi writes; ``written_at`` is the updated_at value the run stamped
on every row it wrote, so the external-write sensor tells this asset's writes from anyone
else's. The alert columns are no longer written (kept for existing tables).

weekly_kpi_churn_alerts: the learners listed in a delivered high-churn summary while their
S stays above the threshold.

``IF NOT EXISTS``: tables created at run time by earlier versions are adopted unchanged.

Revision ID: 0002_kpis_bookkeeping
Revises: 0001_engagement_results
"""

from alembic import op

revision = "0002_kpis_bookkeeping"
down_revision = "0001_engagement_results"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
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
        )
        """
    )
    op.execute("CREATE INDEX IF NOT EXISTS weekly_kpi_recalc_runs_written_at_idx ON weekly_kpi_recalc_runs (written_at)")
    op.execute("CREATE INDEX IF NOT EXISTS weekly_kpi_recalc_runs_alert_key_idx ON weekly_kpi_recalc_runs (alert_key)")
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS weekly_kpi_churn_alerts (
            user_id     TEXT             PRIMARY KEY,
            alerted_on  DATE             NOT NULL,
            s           DOUBLE PRECISION NOT NULL,
            run_id      TEXT             NOT NULL,
            alerted_at  TIMESTAMPTZ      NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS weekly_kpi_churn_alerts_alerted_on_idx ON weekly_kpi_churn_alerts (alerted_on)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS weekly_kpi_churn_alerts")
    op.execute("DROP TABLE IF EXISTS weekly_kpi_recalc_runs")
