"""Engagement results: user_engagement_signals and user_milestones.

``IF NOT EXISTS``: a database where earlier versions of the platform created these tables
at run time adopts them unchanged (same columns, same keys).

Revision ID: 0001_engagement_results
Revises:
"""

from alembic import op

revision = "0001_engagement_results"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS user_engagement_signals (
            user_id                              TEXT        NOT NULL,
            as_of_date                           DATE        NOT NULL,
            goal_setting_completed               BOOLEAN     NOT NULL,
            customer_app_registration_completed  BOOLEAN     NOT NULL,
            customer_app_login_completed         BOOLEAN     NOT NULL,
            customer_app_engaged                 BOOLEAN     NOT NULL,
            customer_app_engagement_dropoff      BOOLEAN     NOT NULL,
            customer_app_retained                BOOLEAN     NOT NULL,
            customer_app_retained_dropoff        BOOLEAN     NOT NULL,
            event_count                          BIGINT      NOT NULL,
            service_event_count                  BIGINT      NOT NULL,
            aligned_event_count                  BIGINT      NOT NULL,
            computed_at                          TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, as_of_date)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS user_milestones (
            user_id                        TEXT        NOT NULL,
            as_of_date                     DATE        NOT NULL,
            goal_setting_complete          BOOLEAN     NOT NULL,
            tier1_app_registered           BOOLEAN     NOT NULL,
            tier1_app_engaged              BOOLEAN     NOT NULL,
            tier1_app_engagement_dropoff   BOOLEAN     NOT NULL,
            tier1_app_retained             BOOLEAN     NOT NULL,
            tier1_app_retention_dropoff    BOOLEAN     NOT NULL,
            tier2_app_registered           BOOLEAN     NOT NULL,
            tier2_app_engaged              BOOLEAN     NOT NULL,
            tier2_app_engagement_dropoff   BOOLEAN     NOT NULL,
            tier2_app_retained             BOOLEAN     NOT NULL,
            tier2_app_retention_dropoff    BOOLEAN     NOT NULL,
            computed_at                    TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, as_of_date)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS user_milestones")
    op.execute("DROP TABLE IF EXISTS user_engagement_signals")
