"""mixpanel_export_budget: the Mixpanel export budget ledger (resources/export_budget.py).

One row per export query (every HTTP request to /api/2.0/export, retries included) of every
run, process and pod, recorded BEFORE it is sent under ``pg_advisory_xact_lock`` so
concurrent runs see each other. Rows older than 7 days are pruned by the runtime. No serial
key (the runtime role then needs no sequence privilege); ``IF NOT EXISTS``: a table created
at run time by an earlier version is adopted with its rows.

Revision ID: 0003_mixpanel_export_budget
Revises: 0002_kpis_bookkeeping
"""

from alembic import op

revision = "0003_mixpanel_export_budget"
down_revision = "0002_kpis_bookkeeping"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_export_budget (
            queried_at  TIMESTAMPTZ NOT NULL,
            purpose     TEXT        NOT NULL CHECK (purpose IN ('refresh', 'late_sweep', 'backfill')),
            run_id      TEXT,
            request     TEXT
        )
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS mixpanel_export_budget_queried_at ON mixpanel_export_budget (queried_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS mixpanel_export_budget")
