"""Acceptance 4: two runs of the same partition at the same time — ingestion, sessions,
signals — leave no duplicate row and lose none.

Real concurrency, as Dagster runs it: each run is its own process (the runner module,
resources from the environment like ``dagster asset materialize``).  The overlap is forced:
both processes wait at a file barrier placed right before their writes (the ingestion's
first batch load, the sessions MERGE, the start of the signals transaction) and are
released together.  DuckDB lets one process hold the file at a time, so the second writer
waits for the lock (``DuckDBWarehouse.connect`` retries); on PostgreSQL the engagement
transaction's first statement takes the domain's advisory lock, so the second signals run
waits for the first to commit and then replaces its rows (a barrier placed later inside
the transaction would deadlock by design).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from analytics_platform.engagement import store
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.warehouse import DuckDBWarehouse
from analytics_platform_tests.engagement.conftest import materialize as materialize_engagement
from analytics_platform_tests.mixpanel.conftest import TEST_CONFIG, materialize_events
from analytics_platform_tests.posthog import data as posthog_data
from analytics_platform_tests.reliability.helpers import (
    clean_env,
    seed_engagement,
    signals_rows,
    event_rows,
    finish,
    records,
    start_runner,
    tail,
)

DAY = "2024-06-05"
SIGNALS = dg.AssetKey(["app_db", "user_engagement_signals"])


def _run_pair(tmp_path: Path, env: dict, args: list[str], point: str) -> list[dict]:
    """Start two runs with the same arguments, released together at ``point``; both must finish."""
    barrier = tmp_path / f"barrier-{point}"
    procs = []
    for i in range(2):
        log = tmp_path / f"run-{point}-{i}.log"
        procs.append((start_runner([*args, "--barrier", str(barrier), "--parties", "2", "--at", point], env, log), log))
    outcomes = []
    for proc, log in procs:
        code = finish(proc, log)
        text = tail(log, 200_000)
        line = next((l for l in text.splitlines() if l.startswith("RESULT ")), None)
        assert line is not None, text[-6000:]
        outcomes.append({"code": code, **json.loads(line[len("RESULT "):]), "log": log})
    assert len(list(barrier.iterdir())) == 2  # both really were at the barrier together
    return outcomes


def _assert_both_succeeded(outcomes: list[dict]) -> None:
    for o in outcomes:
        assert o["code"] == 0 and o["success"], tail(o["log"])


# ------------------------------------------------------------------------------ ingestion
def test_two_ingestion_runs_of_the_same_day(tmp_path, mixpanel_stub, app_db_url):
    mixpanel_stub.add_generated(DAY, 3000, event="app_open")
    mixpanel_stub.add_generated(DAY, 500, event="purchase_failed")
    mixpanel_stub.add_raw_lines(DAY, ["not json", '{"event": "app_open"}', "[1,2]"])
    duckdb_path = tmp_path / "warehouse.duckdb"
    env = clean_env(
        tmp_path,
        ANALYTICS_DATA_DIR=str(tmp_path / "data"),
        DUCKDB_PATH=str(duckdb_path),
        EVENTS_CONFIG=json.dumps(TEST_CONFIG),
        **mixpanel_stub.env(),
        APP_DATABASE_URL=app_db_url,  # the export budget's ledger
    )
    outcomes = _run_pair(
        tmp_path, env, ["--select", "mixpanel_data/mixpanel_events", "--partition", DAY, "--batch-rows", "500"], "ingest_load"
    )
    _assert_both_succeeded(outcomes)
    assert len(mixpanel_stub.export_requests) == 2

    warehouse = DuckDBWarehouse(path=str(duckdb_path))
    rows = event_rows(warehouse, DAY)
    expected = {f"{DAY}-app_open-{i}" for i in range(3000)} | {f"{DAY}-purchase_failed-{i}" for i in range(500)}
    assert len(rows) == len(expected) and set(rows["event_id"]) == expected  # none lost, none twice
    inserted = sorted(o["metadata"]["rows_inserted"] for o in outcomes)
    assert sum(inserted) == len(expected)  # every row was written by exactly one of the runs
    rejected = warehouse.query("SELECT raw_line, partition_date FROM `mixpanel_data.mixpanel_events_rejected`")
    assert len(rejected) == 3 and not rejected.duplicated().any()

    # the same as one clean run
    clean = DuckDBWarehouse(path=str(tmp_path / "clean.duckdb"))
    materialize_events(clean, MixpanelResource(**mixpanel_stub.resource_kwargs()), DAY)
    assert records(event_rows(warehouse, DAY, with_inserted_at=False)) == records(event_rows(clean, DAY, with_inserted_at=False))


# ------------------------------------------------------------------------------ sessions
def _sessions(warehouse) -> pd.DataFrame:
    frame = posthog_data.read_sessions(warehouse)
    return frame.drop(columns=[c for c in frame.columns if c == "_loaded_at"])


def test_two_sessions_runs_of_the_same_day(tmp_path):
    duckdb_path = tmp_path / "warehouse.duckdb"
    warehouse = DuckDBWarehouse(path=str(duckdb_path))
    posthog_data.load_sources(warehouse)
    day = posthog_data.D.isoformat()
    env = clean_env(tmp_path, ANALYTICS_DATA_DIR=str(tmp_path / "data"), DUCKDB_PATH=str(duckdb_path))
    # an earlier run wrote the day already: both runs replace it at the same time
    posthog_data.materialize(warehouse, partition=day)
    outcomes = _run_pair(tmp_path, env, ["--select", "posthog_aggregated/sessions", "--partition", day], "sessions_merge")
    _assert_both_succeeded(outcomes)

    clean = DuckDBWarehouse(path=str(tmp_path / "clean.duckdb"))
    posthog_data.load_sources(clean)
    posthog_data.materialize(clean, partition=day)
    got, want = _sessions(warehouse), _sessions(clean)
    assert got["session_id"].is_unique
    assert len(got) == len(want) > 0
    assert records(got) == records(want)


# ------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("prior_rows", [False, True], ids=["first_run", "rerun"])
def test_two_signals_runs_of_the_same_day(tmp_path, app_db_url, prior_rows):
    app_db = AppDatabase(url=app_db_url)
    seed_engagement(app_db)
    if prior_rows:
        materialize_engagement(app_db, [SIGNALS], DAY)
    env = clean_env(tmp_path, ANALYTICS_DATA_DIR=str(tmp_path / "data"), APP_DATABASE_URL=app_db_url)
    outcomes = _run_pair(tmp_path, env, ["--select", "app_db/user_engagement_signals", "--partition", DAY], "signals_txn")
    _assert_both_succeeded(outcomes)
    # serialised: the later run found (and replaced) the rows the earlier one committed
    replaced = sorted(o["metadata"]["rows_replaced"] for o in outcomes)
    assert replaced == ([40, 40] if prior_rows else [0, 40])
    got = signals_rows(app_db, DAY)

    with app_db.begin() as conn:  # a clean run on the same data
        conn.execute(sa.text(f"DELETE FROM {store.SIGNALS_TABLE}"))
    materialize_engagement(app_db, [SIGNALS], DAY)
    want = signals_rows(app_db, DAY)
    assert len(got) == len(want) == 40
    assert got == want
    if app_db._engine is not None:
        app_db._engine.dispose()
