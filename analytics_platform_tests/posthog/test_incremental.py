"""Acceptance 3: re-runs, the late-data window of the daily schedule, and the one-run full
load that equals the day-by-day result."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.posthog.assets import SOURCE_SPECS, persons, sessions
from analytics_platform.posthog.schedules import (
    DAILY_CRON,
    posthog_daily_job,
    posthog_daily_schedule,
)
from analytics_platform_tests.posthog.data import (
    OUT,
    add_posthog_events,
    ev,
    load_sources,
    materialize,
    metadata_of,
    read_sessions,
    rows_by_id,
    ts,
)

REPO = Path(__file__).resolve().parents[2]
SESSIONS_OP = "posthog_aggregated__sessions"


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows without the load time, in a stable order."""
    return df.drop(columns=["_loaded_at"]).sort_values("session_id").reset_index(drop=True)


def _run_daily_tick(warehouse, when: dt.datetime) -> dg.ExecuteInProcessResult:
    """Evaluate the real schedule at ``when`` and execute its run request with the real job."""
    context = dg.build_schedule_context(scheduled_execution_time=when)
    requests = list(posthog_daily_schedule.evaluate_tick(context).run_requests or [])
    assert len(requests) == 1
    defs = dg.Definitions(
        assets=[*SOURCE_SPECS, sessions, persons],
        jobs=[posthog_daily_job],
        resources={"warehouse": warehouse},
    )
    job = defs.resolve_job_def(posthog_daily_job.name)
    return job.execute_in_process(tags=requests[0].tags, instance=dg.DagsterInstance.ephemeral())


def test_rerunning_a_partition_gives_the_same_rows(duck):
    assert materialize(duck, partition="2024-06-03").success
    first = read_sessions(duck)
    assert materialize(duck, partition="2024-06-03").success
    second = read_sessions(duck)
    pd.testing.assert_frame_equal(_comparable(first), _comparable(second))
    assert len(second) == second["session_id"].nunique() == 3
    # the re-run replaced the rows (new load time), it did not add any
    assert (second["_loaded_at"] > first["_loaded_at"].max()).all()


def test_schedule_requests_one_range_run_of_the_new_day_and_three_before():
    assert posthog_daily_schedule.cron_schedule == DAILY_CRON
    assert posthog_daily_schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 6, 6, 3, 30, tzinfo=dt.timezone.utc))
    [request] = posthog_daily_schedule.evaluate_tick(context).run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("2024-06-02", "2024-06-05")
    assert request.job_name in (None, posthog_daily_job.name)
    # near the first partition the window is clipped, never before ANALYTICS_START_DATE
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 1, 3, 3, 30, tzinfo=dt.timezone.utc))
    [request] = posthog_daily_schedule.evaluate_tick(context).run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("2024-01-01", "2024-01-02")


def test_late_event_changes_yesterdays_session_at_the_next_daily_run(duck):
    # tick of 2024-06-05: loads 06-01 .. 06-04 in one run, then persons
    first = _run_daily_tick(duck, dt.datetime(2024, 6, 5, 3, 30, tzinfo=dt.timezone.utc))
    assert first.success
    assert sorted(m["partition"] for m in metadata_of(first)) == [
        "2024-06-01", "2024-06-02", "2024-06-03", "2024-06-04",
    ]
    assert len(metadata_of(first, "posthog_aggregated/persons")) == 1
    s1 = rows_by_id(read_sessions(duck))["S1"]
    assert (s1["event_count"], s1["quiz_completed_count"]) == (11, 1)

    # late events arrive for 06-03 (S1 goes on until 10:30) and a late new session on 06-02
    add_posthog_events(duck, [
        ev("late1", "quiz_completed", "2024-06-03 10:30:00", "u1", "S1"),
        ev("late2", "$pageview", "2024-06-02 15:00:00", "u2", "S9"),
    ])
    s1 = rows_by_id(read_sessions(duck))["S1"]
    assert s1["event_count"] == 11  # nothing changes before the next run

    second = _run_daily_tick(duck, dt.datetime(2024, 6, 6, 3, 30, tzinfo=dt.timezone.utc))
    assert second.success
    assert sorted(m["partition"] for m in metadata_of(second)) == [
        "2024-06-02", "2024-06-03", "2024-06-04", "2024-06-05",
    ]
    rows = rows_by_id(read_sessions(duck))
    s1 = rows["S1"]
    assert (s1["event_count"], s1["quiz_completed_count"]) == (12, 2)
    assert pd.Timestamp(s1["session_end"]) == pd.Timestamp(ts("2024-06-03 10:30:00"))
    assert s1["duration_seconds"] == pytest.approx(30 * 60)
    assert str(rows["S9"]["session_date"])[:10] == "2024-06-02"
    all_rows = read_sessions(duck)
    assert len(all_rows) == all_rows["session_id"].nunique()  # never duplicated
    # persons rebuilt after sessions in the same run
    p = duck.query(f"SELECT * FROM `{OUT}.persons` WHERE distinct_id = 'u1'").iloc[0]
    assert p["quiz_completed_count"] == 3  # S0: 1, S1: 2, S4: 0


def _sessions_step_count(result: dg.ExecuteInProcessResult) -> int:
    return sum(
        1 for e in result.all_events if e.is_step_success and e.step_key == SESSIONS_OP
    )


def test_full_load_is_one_run_and_equals_day_by_day(duck):
    days = [f"2024-06-0{i}" for i in range(1, 6)]
    full = materialize(duck, partition_range=(days[0], days[-1]))
    assert full.success
    assert _sessions_step_count(full) == 1  # the whole range in one execution
    meta = {m["partition"]: m for m in metadata_of(full)}
    assert sorted(meta) == days
    # each partition reports its own counts, not the run's total
    assert {d: meta[d]["dagster/row_count"] for d in days} == {
        "2024-06-01": 0, "2024-06-02": 1, "2024-06-03": 3, "2024-06-04": 1, "2024-06-05": 0,
    }
    assert {d: meta[d]["events_without_session_id"] for d in days} == {
        "2024-06-01": 0, "2024-06-02": 0, "2024-06-03": 2, "2024-06-04": 1, "2024-06-05": 0,
    }
    assert meta["2024-06-03"]["sessions_spanning_midnight"] == 1
    assert meta["2024-06-03"]["run_sessions_total"] == 5
    full_rows = _comparable(read_sessions(duck))
    assert sorted(full_rows["session_id"]) == ["S0", "S1", "S2", "S3", "S4"]

    duck.execute(f"DROP TABLE `{OUT}.sessions`")
    for day in days:
        assert materialize(duck, partition=day).success
    daily_rows = _comparable(read_sessions(duck))
    pd.testing.assert_frame_equal(full_rows, daily_rows)


def test_full_load_from_the_command_line_with_partition_range(tmp_path):
    """`dagster asset materialize --partition-range` over the days: one run, same rows."""
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    db = tmp_path / "cli.duckdb"
    warehouse = DuckDBWarehouse(path=str(db))
    load_sources(warehouse)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "ANALYTICS_", "DUCKDB_"))},
        "DAGSTER_HOME": str(home),
        "ANALYTICS_DATA_DIR": str(tmp_path / "data"),
        "DUCKDB_PATH": str(db),
        "ANALYTICS_START_DATE": "2024-06-01",
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
            "-m", "analytics_platform.definitions",
            "--select", "posthog_aggregated/sessions",
            "--partition-range", "2024-06-01...2024-06-05",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert len(runs) == 1
        records = instance.fetch_materializations(dg.AssetKey(["posthog_aggregated", "sessions"]), limit=100).records
        assert sorted(r.partition_key for r in records) == [f"2024-06-0{i}" for i in range(1, 6)]
    finally:
        instance.dispose()
    rows = read_sessions(warehouse)
    assert sorted(rows["session_id"]) == ["S0", "S1", "S2", "S3", "S4"]
