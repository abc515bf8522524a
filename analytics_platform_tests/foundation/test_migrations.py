"""The platform's tables in the application PostgreSQL are created and dropped by the
versioned migrations (analytics_platform.migrations), on a real PostgreSQL: up and down,
adoption of tables created at run time by earlier versions, the runtime's refusal to run
on an older schema, and the command line."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from analytics_platform import migrations


def _tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )).scalars())


@pytest.fixture
def empty_db(_postgres_server):
    """A fresh database that has NOT been migrated (unlike ``app_db_url``)."""
    name, url = _postgres_server.create_database("mig")
    engine = sa.create_engine(url)
    yield url, engine
    engine.dispose()
    _postgres_server.drop_database(name)


def test_upgrade_and_downgrade_on_a_real_postgres(empty_db):
    url, engine = empty_db
    assert _tables(engine) == set()
    migrations.upgrade(url)
    assert _tables(engine) == set(migrations.OWNED_TABLES) | {migrations.VERSION_TABLE}
    with engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head() == "0002_kpis_bookkeeping"
        migrations.require_current(conn)  # no error
        # the columns and keys the code writes
        pk = conn.execute(sa.text(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'user_engagement_signals'::regclass AND i.indisprimary"
        )).scalar()
        assert pk == ["as_of_date", "user_id"]

    migrations.upgrade(url)  # idempotent: already at head
    migrations.downgrade(url, "0001_engagement_results")
    assert _tables(engine) == {"user_engagement_signals", "user_milestones", migrations.VERSION_TABLE}
    migrations.downgrade(url, "base")
    assert _tables(engine) == {migrations.VERSION_TABLE}
    with engine.connect() as conn:
        assert migrations.current_revision(conn) is None
    migrations.upgrade(url)  # and up again
    assert set(migrations.OWNED_TABLES) <= _tables(engine)


def test_tables_created_by_earlier_versions_are_adopted_with_their_rows(empty_db):
    url, engine = empty_db
    with engine.begin() as conn:  # what the run-time CREATE TABLE IF NOT EXISTS made before
        conn.exec_driver_sql(
            "CREATE TABLE weekly_kpi_churn_alerts (user_id TEXT PRIMARY KEY, alerted_on DATE NOT NULL, "
            "s DOUBLE PRECISION NOT NULL, run_id TEXT NOT NULL, alerted_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.exec_driver_sql("INSERT INTO weekly_kpi_churn_alerts VALUES ('u1', '2024-06-05', 0.8, 'r1', now())")
    migrations.upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM weekly_kpi_churn_alerts")).scalar() == 1
        assert migrations.current_revision(conn) == migrations.head()


def test_the_runtime_refuses_an_unmigrated_database_naming_the_command(empty_db):
    url, engine = empty_db
    with engine.connect() as conn:
        with pytest.raises(migrations.SchemaNotMigrated, match="python -m analytics_platform.migrations upgrade"):
            migrations.require_current(conn)
    migrations.upgrade(url, "0001_engagement_results")
    with engine.connect() as conn:
        with pytest.raises(migrations.SchemaNotMigrated, match="0001_engagement_results"):
            migrations.require_current(conn)


def test_command_line(empty_db, capsys):
    from analytics_platform.migrations.__main__ import main

    url, engine = empty_db
    assert main(["--url", url, "upgrade"]) == 0
    assert "revision: 0002_kpis_bookkeeping" in capsys.readouterr().out
    assert main(["--url", url, "downgrade", "base"]) == 0
    assert "revision: (none)" in capsys.readouterr().out
    assert _tables(engine) == {migrations.VERSION_TABLE}
