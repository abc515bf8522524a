"""Acceptance 3: the application PostgreSQL is restarted between runs and crashes (SIGKILL
of the server) in the middle of a KPI run.  The next run succeeds (the pooled engine
reconnects), and ``weekly_kpi`` is either fully updated or untouched, never in between.

The server is a dedicated throwaway cluster (``pg_server.RestartablePostgres``), not the
session's shared one.  The crash point is deterministic: the test holds a row lock on the ``weekly_kpi`` row the run's upsert reaches
last (rows are written in user_id order), so the run has written every other row of its
transaction and waits in the middle of the statement; the server is killed exactly there.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from analytics_platform.demo import DemoContext
from analytics_platform.demo import kpis as kpis_demo
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.settings import get_settings
from analytics_platform_tests.kpis.helpers import materialize, metadata, slack_outbox
from analytics_platform_tests.reliability.helpers import wait_for
from analytics_platform_tests.reliability.pg_server import RestartablePostgres, wait_until_up

AS_OF_1 = "2024-06-06T00:00:00+00:00"  # week of Monday 2024-06-03
AS_OF_2 = "2024-06-07T06:00:00+00:00"  # same week, later: different S for every user


@pytest.fixture
def server() -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres()
    try:
        yield pg
    finally:
        pg.stop()


def _seeded(url: str) -> AppDatabase:
    db = AppDatabase(url=url)
    kpis_demo.seed(DemoContext(settings=get_settings(), resources={"app_db": db}))
    return db


def _weekly_kpi(url: str, with_updated_at: bool = True) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            cols = "user_id, week_start, kpis::text" + (", updated_at" if with_updated_at else "")
            return [tuple(r) for r in conn.execute(sa.text(f"SELECT {cols} FROM weekly_kpi ORDER BY user_id, week_start"))]
    finally:
        engine.dispose()


def _kpis_by_user(url: str) -> dict[str, str]:
    return {r[0]: r[2] for r in _weekly_kpi(url, with_updated_at=False)}


def test_restarts_between_runs_do_not_break_the_next_run(server, tmp_path):
    url = server.create_database()
    db = _seeded(url)
    slack = slack_outbox(tmp_path)
    first = materialize(db, slack, as_of=AS_OF_1)
    assert first.success and metadata(first)["processed"] > 0

    server.restart()  # every pooled connection of the engine is now dead
    second = materialize(db, slack, as_of=AS_OF_2)
    assert second.success
    meta = metadata(second)
    assert meta["processed"] > 0 and meta["updated"] > 0

    server.crash()  # and a crash between runs, followed by recovery
    server.start()
    third = materialize(db, slack, as_of=AS_OF_2)
    assert third.success
    assert metadata(third)["updated"] == meta["processed"]


def test_a_crash_during_a_kpi_run_leaves_weekly_kpi_untouched_and_the_next_run_completes(server, tmp_path):
    url = server.create_database()
    db = _seeded(url)
    slack = slack_outbox(tmp_path)
    assert materialize(db, slack, as_of=AS_OF_1).success
    before = _weekly_kpi(url)

    # the reference: what a clean run of AS_OF_2 writes, on an identical database
    reference_url = server.create_database()
    reference_db = _seeded(reference_url)
    assert materialize(reference_db, slack, as_of=AS_OF_1).success
    assert materialize(reference_db, slack, as_of=AS_OF_2).success
    expected = _kpis_by_user(reference_url)
    assert expected != _kpis_by_user(url)  # the second run changes values

    # hold the row the run's upsert reaches last (it locks rows in user_id order): the run
    # writes every other row, then waits in the middle of its statement
    last_user = max(set(expected) & {r[0] for r in before})
    blocker = sa.create_engine(url, poolclass=NullPool).connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM weekly_kpi WHERE user_id = :u FOR UPDATE"), {"u": last_user})
    blocker_pid = blocker.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    outcome: dict = {}

    def run() -> None:
        outcome["result"] = materialize(db, slack, as_of=AS_OF_2, raise_on_error=False)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    observer = sa.create_engine(url, poolclass=NullPool)

    def run_has_written_and_waits() -> bool:
        with observer.connect() as conn:  # a new connection: pg_stat_activity is per-transaction
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE :blocker = ANY(pg_blocking_pids(pid))"
            ), {"blocker": blocker_pid}).scalar()
        return waiting > 0  # only the upsert of weekly_kpi can wait for that row lock

    wait_for(run_has_written_and_waits, timeout=120, what="the KPI run to block inside its upsert")
    # the run's weekly_kpi writes exist (uncommitted): the old row versions carry its xmax,
    # and other sessions still see the old rows
    with observer.connect() as conn:
        being_rewritten = conn.execute(sa.text("SELECT count(*) FROM weekly_kpi WHERE xmax::text <> '0'")).scalar()
    assert being_rewritten > len(expected) // 2
    assert _weekly_kpi(url) == before
    observer.dispose()

    server.crash()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert outcome["result"].success is False
    try:
        blocker.close()
    except Exception:  # noqa: BLE001 - its server is gone
        pass

    server.start()
    wait_until_up(url)
    assert _weekly_kpi(url) == before  # untouched

    after = materialize(db, slack, as_of=AS_OF_2)
    assert after.success
    assert _kpis_by_user(url) == expected  # fully updated, same as a clean run
    written = metadata(after)["write_watermark"]
    stamps = {r[0]: r[3] for r in _weekly_kpi(url)}
    processed = metadata(after)["processed"]
    assert sum(1 for s in stamps.values() if s == dt.datetime.fromisoformat(written)) == processed
