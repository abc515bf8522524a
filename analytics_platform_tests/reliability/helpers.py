"""Helpers of the reliability tests: subprocess runs of assets, kill points, table snapshots."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
import sqlalchemy as sa

from analytics_platform.engagement import store
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.settings import _ENV_TO_FIELD
from analytics_platform_tests.engagement.conftest import FIT_APP, GOAL_FITNESS, GOAL_SLEEP, SLEEP_APP, EngagementDb

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DATASET = "mixpanel_data"
TABLE = "mixpanel_events"


# ------------------------------------------------------------------------- processes
def clean_env(tmp: Path, **overrides: Optional[str]) -> dict[str, str]:
    """The test process environment without any contract variable, plus ``overrides``.

    ``DAGSTER_HOME`` always points at a fresh directory under ``tmp`` (the repository's
    dagster.yaml must not be needed) whose storage is created here, once, so that processes
    started together never race to create it.  A value of None removes the variable.
    """
    env = {k: v for k, v in os.environ.items() if k not in _ENV_TO_FIELD and k not in ("DAGSTER_HOME", "PGTZ")}
    home = tmp / f"dagster_home_{time.monotonic_ns()}"
    home.mkdir(parents=True, exist_ok=True)
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))):
        pass
    env["DAGSTER_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def start_runner(
    args: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path = REPO
) -> subprocess.Popen:
    """``python -m analytics_platform_tests.reliability.runner ARGS`` in its own process group."""
    return start_process([PYTHON, "-m", "analytics_platform_tests.reliability.runner", *args], env, log_path, cwd)


def start_process(argv: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path = REPO) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_for(predicate, timeout: float, proc: Optional[subprocess.Popen] = None, log: Optional[Path] = None, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; fail with the process log on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{tail(log)}")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"process did not finish in {timeout}s:\n{tail(log)}")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the whole process group of ``proc`` (ours: started with a new session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def tail(path: Optional[Path], chars: int = 6000) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


# ------------------------------------------------------------------------- warehouse
def event_rows(warehouse, day: Optional[str] = None, with_inserted_at: bool = True) -> pd.DataFrame:
    """Every column of the events table (properties as JSON text), one row per stored row."""
    cols = "event_id, event_name, distinct_id, event_timestamp, TO_JSON_STRING(properties) AS properties, " \
           "event_date, device_id, os, mp_processing_time_ms"
    if with_inserted_at:
        cols += ", inserted_at"
    where, params = ("WHERE event_date = @d", {"d": pd.Timestamp(day).date()}) if day else ("", None)
    if not warehouse.table_exists(DATASET, TABLE):
        return pd.DataFrame()
    frame = warehouse.query(f"SELECT {cols} FROM `{DATASET}.{TABLE}` {where} ORDER BY event_id, inserted_at", params)
    return frame.reset_index(drop=True)


def records(frame: pd.DataFrame) -> list[tuple]:
    """Rows as comparable tuples (NaN/NA -> None, timestamps -> ISO strings)."""
    out = []
    for row in frame.astype(object).where(frame.notna(), None).itertuples(index=False):
        out.append(tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in row))
    return out


def json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metadata(result, node: str) -> dict[str, Any]:
    for mat in result.asset_materializations_for_node(node):
        return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"{node} was not materialized")


# ------------------------------------------------------------------------- engagement
def signals_rows(app_db: AppDatabase, day: str, with_computed_at: bool = False) -> list[tuple]:
    with app_db.connect() as conn:
        frame = pd.read_sql(
            sa.text(f"SELECT * FROM {store.SIGNALS_TABLE} WHERE as_of_date = :d ORDER BY user_id"),
            conn,
            params={"d": dt.date.fromisoformat(day)},
        )
    if not with_computed_at:
        frame = frame.drop(columns=["computed_at"])
    else:  # computed_at last
        frame = frame[[c for c in frame.columns if c != "computed_at"] + ["computed_at"]]
    return records(frame)


def seed_engagement(app_db: AppDatabase, users: int = 40) -> EngagementDb:
    """Goal tables in ``app_db``, events in the warehouse mirror of the settings'
    ``DUCKDB_PATH`` (what the CLI runs use), an empty local Firestore export."""
    from analytics_platform.resources.warehouse import DuckDBWarehouse
    from analytics_platform.settings import get_settings

    settings = get_settings()
    export = settings.data_dir / "firestore" / "events.jsonl"
    export.parent.mkdir(parents=True, exist_ok=True)
    export.touch()
    with app_db.begin() as conn:
        store.ensure_goal_tables(conn)
    db = EngagementDb(app_db, DuckDBWarehouse(path=str(settings.duckdb_path)))
    db.mirror.ensure()
    db.seed_world()
    end = dt.datetime(2024, 6, 6, tzinfo=dt.timezone.utc)
    rows = []
    for u in range(users):
        user = f"user-{u:03d}"
        db.goal(user, GOAL_FITNESS, 1)
        if u % 3 == 0:
            db.goal(user, GOAL_SLEEP, 2)
        for week in range(u % 9):
            rows.append({"user_id": user, "app_id": FIT_APP if week % 2 else SLEEP_APP,
                         "ts": end - dt.timedelta(days=7 * week + 1, hours=u % 5), "fg": 60_000 + 1000 * u})
    db.events(rows)
    return db
