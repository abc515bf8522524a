"""Alembic environment of analytics_platform.migrations (online mode only: the migrations
run against the application PostgreSQL given by the caller's ``sqlalchemy.url``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

cfg = context.config
engine = sa.create_engine(cfg.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    # one migration at a time, whatever runs it (CLI, the embedded default, tests)
    connection.exec_driver_sql("SELECT pg_advisory_lock(hashtext('analytics_platform.migrations'))")
    connection.commit()
    try:
        context.configure(
            connection=connection,
            version_table=cfg.get_main_option("version_table"),
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.exec_driver_sql("SELECT pg_advisory_unlock(hashtext('analytics_platform.migrations'))")
        connection.commit()
engine.dispose()
