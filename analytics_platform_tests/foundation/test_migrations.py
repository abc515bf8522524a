"""The platform's tables in the application PostgreSQL are created and dropped by the
versioned migrations (analytics_platform.migrations), on a real PostgreSQL: up and down,
adoption of tables created at run time by earlier versions, the runtime's refusal to run
on an older schema, and the command line."""

from __future__ import annotations

import datetime as dt

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
    _postgres_server.drop_database(name)  # (IF EXISTS: a test may have dropped it)


def test_upgrade_and_downgrade_on_a_real_postgres(empty_db):
    url, engine = empty_db
    assert _tables(engine) == set()
    migrations.upgrade(url)
    assert _tables(engine) == set(migrations.OWNED_TABLES) | {migrations.VERSION_TABLE}
    with engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head() == "0003_mixpanel_export_budget"
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
    assert "revision: 0003_mixpanel_export_budget" in capsys.readouterr().out
    assert main(["--url", url, "downgrade", "base"]) == 0
    assert "revision: (none)" in capsys.readouterr().out
    assert _tables(engine) == {migrations.VERSION_TABLE}


def test_the_runtime_role_needs_no_create_on_public(_postgres_server, empty_db, duckdb_warehouse):
    """Migrate with an owner role, then run the engagement assets as a role that may not
    create anything in ``public`` (only DML on the migrated tables, SELECT on the app's)."""
    import uuid

    from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY
    from analytics_platform.engagement import store
    from analytics_platform.resources.app_db import AppDatabase
    from analytics_platform_tests.engagement.conftest import EngagementDb, materialize

    url, engine = empty_db
    suffix = uuid.uuid4().hex[:8]
    owner, runtime = f"analytics_owner_{suffix}", f"analytics_runtime_{suffix}"
    database = sa.make_url(url).database
    with engine.begin() as conn:  # as the superuser: the roles, and the application's goal tables
        conn.exec_driver_sql(f'CREATE ROLE "{owner}" LOGIN PASSWORD \'owner-pw\'')
        conn.exec_driver_sql(f'CREATE ROLE "{runtime}" LOGIN PASSWORD \'runtime-pw\'')
        conn.exec_driver_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.exec_driver_sql(f'GRANT USAGE, CREATE ON SCHEMA public TO "{owner}"')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{runtime}"')
        store.ensure_goal_tables(conn)
        for table in store.GOAL_TABLES:
            conn.exec_driver_sql(f'GRANT SELECT ON {table} TO "{runtime}"')
        conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database}" TO "{owner}", "{runtime}"')
        conn.exec_driver_sql("INSERT INTO goal_sub_categories VALUES (1, 'Fitness')")
        conn.exec_driver_sql("INSERT INTO goals VALUES (10, 'Get fit', 1)")
        conn.exec_driver_sql("INSERT INTO apps VALUES (1, 'com.fit.app', 'Fit')")
        conn.exec_driver_sql("INSERT INTO app_goal_sub_categories VALUES (1, 1)")
        conn.exec_driver_sql("INSERT INTO user_goals VALUES ('alice', 10, 1)")
    as_role = lambda role, pw: sa.make_url(url).set(username=role, password=pw).render_as_string(hide_password=False)  # noqa: E731
    runtime_db = AppDatabase(url=as_role(runtime, "runtime-pw"))
    try:
        migrations.upgrade(as_role(owner, "owner-pw"), grant_to=runtime)
        with runtime_db.connect() as conn:
            assert conn.execute(sa.text("SELECT has_schema_privilege(current_user, 'public', 'CREATE')")).scalar() is False
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.exec_driver_sql("CREATE TABLE runtime_may_not (x int)")
        world = EngagementDb(runtime_db, duckdb_warehouse)
        world.mirror.ensure()
        world.event("alice", "com.fit.app", dt.datetime(2024, 6, 5, 12, tzinfo=dt.timezone.utc))
        result = materialize(runtime_db, [SIGNALS_KEY, MILESTONES_KEY])
        assert result.success
        assert world.rows("user_engagement_signals")["alice"]["event_count"] == 1
        assert world.rows("user_milestones")["alice"]["goal_setting_complete"] is True
    finally:
        if runtime_db._engine is not None:
            runtime_db._engine.dispose()
        with _postgres_server.admin_engine().connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (owner, runtime):
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
