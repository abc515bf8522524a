"""Acceptance 5: a run killed with SIGKILL in the middle of its materialization, then run
again: the result equals a clean run.

* Mixpanel ingestion (DuckDB), in a process of its own (``runner``), killed after two of its
  batches were committed: the day is half-written when the process dies.
* Engagement signals (PostgreSQL), in a process of its own, killed inside its transaction
  after the partition's signals rows were deleted and copied again (not committed).
* ``app_db/weekly_kpi`` through the real CLI, ``dagster asset materialize``, killed (the
  whole process group) while its upsert has written rows of its open transaction and waits
  on the last one (a row lock held by the test).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import uuid
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from analytics_platform.demo import DemoContext
from analytics_platform.engagement import store
from analytics_platform.demo import kpis as kpis_demo
from analytics_platform.kpis.assets import run_config
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.warehouse import DuckDBWarehouse
from analytics_platform.settings import get_settings
from analytics_platform_tests.engagement.conftest import FIT_APP
from analytics_platform_tests.engagement.conftest import materialize as materialize_engagement
from analytics_platform_tests.kpis.helpers import materialize as materialize_kpi
from analytics_platform_tests.kpis.helpers import slack_outbox
from analytics_platform_tests.mixpanel.conftest import TEST_CONFIG, materialize_events
from analytics_platform_tests.reliability.helpers import (
    REPO,
    seed_engagement,
    signals_rows,
    clean_env,
    event_rows,
    kill_group,
    records,
    start_process,
    start_runner,
    tail,
    wait_for,
)

DAY = "2024-06-05"
TOTAL = 3400


def _serve_day(stub) -> None:
    stub.add_generated(DAY, 3000, event="app_open")
    stub.add_generated(DAY, 400, event="purchase_failed")
    stub.add_raw_lines(DAY, ["not json", '{"event": "app_open"}', '{"event": "app_open", "properties": {"time": "soon"}}'])


def _rejected(warehouse) -> list[tuple]:
    frame = warehouse.query(
        "SELECT raw_line, reason, partition_date FROM `mixpanel_data.mixpanel_events_rejected` ORDER BY raw_line"
    )
    return records(frame)


def test_ingestion_killed_after_two_committed_batches_then_rerun_equals_a_clean_run(tmp_path, mixpanel_stub, app_db_url):
    _serve_day(mixpanel_stub)
    duckdb_path = tmp_path / "warehouse.duckdb"
    env = clean_env(
        tmp_path,
        ANALYTICS_DATA_DIR=str(tmp_path / "data"),
        DUCKDB_PATH=str(duckdb_path),
        EVENTS_CONFIG=json.dumps(TEST_CONFIG),
        **mixpanel_stub.env(),
        APP_DATABASE_URL=app_db_url,  # the export budget's ledger
    )
    flag, log = tmp_path / "paused", tmp_path / "killed-run.log"
    proc = start_runner(
        ["--select", "mixpanel_data/mixpanel_events", "--partition", DAY, "--batch-rows", "500",
         "--pause-at", "ingest_load", "--after", "2", "--flag", str(flag)],
        env, log,
    )
    wait_for(flag.exists, timeout=240, proc=proc, log=log, what="the run to reach its kill point")
    kill_group(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert "RESULT" not in tail(log)

    warehouse = DuckDBWarehouse(path=str(duckdb_path))
    left = len(event_rows(warehouse, DAY))  # what the killed run left behind: a half-written day
    assert 0 < left < TOTAL

    rerun = materialize_events(warehouse, MixpanelResource(**mixpanel_stub.resource_kwargs()), DAY)
    assert rerun.success

    clean = DuckDBWarehouse(path=str(tmp_path / "clean.duckdb"))
    materialize_events(clean, MixpanelResource(**mixpanel_stub.resource_kwargs()), DAY)
    got = event_rows(warehouse, DAY, with_inserted_at=False)
    assert len(got) == TOTAL and got["event_id"].is_unique
    assert records(got) == records(event_rows(clean, DAY, with_inserted_at=False))
    assert _rejected(warehouse) == _rejected(clean) and len(_rejected(clean)) == 3


# ----------------------------------------------------------------------------- signals
def test_signals_killed_inside_their_transaction_then_rerun_equals_a_clean_run(tmp_path, app_db_url):
    app_db = AppDatabase(url=app_db_url)
    db = seed_engagement(app_db)
    signals = [dg.AssetKey(["app_db", "user_engagement_signals"])]
    materialize_engagement(app_db, signals, DAY)
    before = signals_rows(app_db, DAY, with_computed_at=True)
    # new activity since (in the warehouse mirror): the killed run would have changed the partition
    db.events([{"user_id": f"user-{u:03d}", "app_id": FIT_APP, "fg": 300_000, "session": f"late-{u}",
                "ts": dt.datetime(2024, 6, 5, 12, tzinfo=dt.timezone.utc)} for u in range(0, 40, 2)])
    env = clean_env(tmp_path, ANALYTICS_DATA_DIR=str(tmp_path / "data"), APP_DATABASE_URL=app_db_url)
    flag, log = tmp_path / "paused", tmp_path / "killed-run.log"
    proc = start_runner(
        ["--select", "app_db/user_engagement_signals", "--partition", DAY,
         "--pause-at", "signals_write", "--after", "1", "--flag", str(flag)],
        env, log,
    )
    wait_for(flag.exists, timeout=240, proc=proc, log=log, what="the run to reach its kill point")
    kill_group(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    # the server ends the orphaned transaction (its client is gone): nothing was committed
    wait_for(lambda: signals_rows(app_db, DAY, with_computed_at=True) == before and not _busy_backends(app_db),
             timeout=60, what="the killed run's transaction to be rolled back")
    assert materialize_engagement(app_db, signals, DAY).success
    got = signals_rows(app_db, DAY)
    assert got != [r[:-1] for r in before]

    with app_db.begin() as conn:  # a clean run on the same data
        conn.execute(sa.text(f"DELETE FROM {store.SIGNALS_TABLE}"))
    materialize_engagement(app_db, signals, DAY)
    assert got == signals_rows(app_db, DAY)
    app_db.get_engine().dispose()


def _busy_backends(app_db: AppDatabase) -> int:
    """Other sessions of this database inside a transaction (the killed run's, until it ends)."""
    with app_db.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
        )).scalar())


# --------------------------------------------------------------------------------- KPI
AS_OF_1 = "2024-06-06T00:00:00+00:00"
AS_OF_2 = "2024-06-07T06:00:00+00:00"


def _database(postgres_url: str) -> str:
    name = f"sigkill_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    from analytics_platform import migrations

    migrations.upgrade(url)  # as a deployment does before the runtime connects
    return url


def _kpis(url: str, with_updated_at: bool = False) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=NullPool)
    cols = "user_id, week_start, kpis::text" + (", updated_at" if with_updated_at else "")
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(f"SELECT {cols} FROM weekly_kpi ORDER BY 1, 2"))]
    engine.dispose()
    return rows


def _seeded(url: str) -> AppDatabase:
    db = AppDatabase(url=url)
    kpis_demo.seed(DemoContext(settings=get_settings(), resources={"app_db": db}))
    return db


def test_kpi_cli_run_killed_mid_upsert_then_rerun_equals_a_clean_run(tmp_path, postgres_url):
    url, reference_url = _database(postgres_url), _database(postgres_url)
    db, reference = _seeded(url), _seeded(reference_url)
    slack = slack_outbox(tmp_path)
    for target in (db, reference):
        assert materialize_kpi(target, slack, as_of=AS_OF_1).success
    assert materialize_kpi(reference, slack, as_of=AS_OF_2).success  # the clean run
    expected = _kpis(reference_url)
    before = _kpis(url, with_updated_at=True)
    assert expected != _kpis(url)

    last_user = max({r[0] for r in expected} & {r[0] for r in before})
    blocker = sa.create_engine(url, poolclass=NullPool).connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM weekly_kpi WHERE user_id = :u FOR UPDATE"), {"u": last_user})
    blocker_pid = blocker.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    observer = sa.create_engine(url, poolclass=NullPool)

    def blocked_backends() -> list[int]:
        with observer.connect() as conn:
            return [r[0] for r in conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE :b = ANY(pg_blocking_pids(pid))"), {"b": blocker_pid}
            )]

    env = clean_env(
        tmp_path,
        ANALYTICS_DATA_DIR=str(tmp_path / "data"),
        APP_DATABASE_URL=url,
    )
    log = tmp_path / "cli.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    proc = start_process(
        [dagster, "asset", "materialize", "-m", "analytics_platform.definitions", "--select", "app_db/weekly_kpi",
         "--config-json", json.dumps(run_config(as_of=AS_OF_2))],
        env, log, cwd=REPO,
    )
    wait_for(lambda: bool(blocked_backends()), timeout=240, proc=proc, log=log, what="the CLI run to block in its upsert")
    (orphan,) = blocked_backends()
    kill_group(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    blocker.rollback()  # the orphaned backend finishes its statement, finds its client gone, rolls back
    blocker.close()

    def gone() -> bool:
        with observer.connect() as conn:
            return not conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": orphan}).first()

    wait_for(gone, timeout=60, what="the killed run's backend to end")
    observer.dispose()
    assert _kpis(url, with_updated_at=True) == before  # nothing of the killed run was committed

    rerun = materialize_kpi(db, slack, as_of=AS_OF_2)
    assert rerun.success
    assert _kpis(url) == expected
    for target in (db, reference):
        if target._engine is not None:
            target._engine.dispose()
