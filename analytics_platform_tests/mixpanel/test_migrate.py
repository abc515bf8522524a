"""Issue 14 item 6: switching over from the old collector's events table, on DuckDB and
on the BigQuery emulator (``warehouse`` runs a test on both).

The old collector's table (its README, under the shared seeds): ``event_timestamp,
inserted_at, event_name, properties JSON, distinct_id, event_id`` - no ``event_date`` -
here also partitioned by ``DATE(event_timestamp)`` and clustered by ``event_name`` (its
own layout), holding duplicates the old service let through.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.common import UTC
from analytics_platform.mixpanel import migrate
from analytics_platform.mixpanel.migration_job import mixpanel_migrate_events_table
from analytics_platform.mixpanel.tables import EVENTS_SCHEMA, ensure_events_table
from analytics_platform.resources.warehouse import Column, DuckDBWarehouse
from analytics_platform_tests.mixpanel.conftest import (
    DATASET,
    EVENTS_KEY,
    TABLE,
    materialize_events,
    metadata_of,
    mp_event,
    ts,
)

OLD_SCHEMA = (
    Column("event_timestamp", "TIMESTAMP"),
    Column("inserted_at", "TIMESTAMP"),
    Column("event_name", "STRING"),
    Column("properties", "JSON"),
    Column("distinct_id", "STRING"),
    Column("event_id", "STRING"),
)
REPO = Path(__file__).resolve().parents[2]


def _old_row(event_id: str, at: dt.datetime, inserted: dt.datetime, name: str = "app_open", **props) -> dict:
    return {
        "event_timestamp": at,
        "inserted_at": inserted,
        "event_name": name,
        "properties": json.dumps({"time": int(at.timestamp()), "distinct_id": "u1", "$insert_id": event_id, **props}),
        "distinct_id": "u1",
        "event_id": event_id,
    }


OLD_ROWS = [
    _old_row("a", ts("2024-06-04T10:00:00"), ts("2024-06-04T10:15:00"), v=1),
    _old_row("a", ts("2024-06-04T10:00:00"), ts("2024-06-04T10:30:00"), v=2),  # duplicate, loaded later
    _old_row("a", ts("2024-06-04T10:00:00"), ts("2024-06-04T11:00:00"), v=3),  # again
    _old_row("a", ts("2024-06-05T09:00:00"), ts("2024-06-05T09:15:00")),  # same id, another day: a row
    _old_row("b", ts("2024-06-05T23:59:59"), ts("2024-06-06T00:15:00")),
    _old_row("c", ts("2024-06-05T00:00:00"), ts("2024-06-05T00:15:00"), name="impression_privacy"),
    _old_row("c", ts("2024-06-05T00:00:00"), ts("2024-06-05T00:15:00"), name="impression_privacy"),  # exact copy
]


def _seed_old_table(warehouse, rows=OLD_ROWS) -> None:
    warehouse.ensure_table(DATASET, TABLE, OLD_SCHEMA, partition_by="DATE(event_timestamp)", cluster_by=("event_name",))
    warehouse.load(pd.DataFrame(rows), DATASET, TABLE, OLD_SCHEMA, mode="append")


def _run_job(warehouse, dry_run: bool = False, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return mixpanel_migrate_events_table.execute_in_process(
        resources={"warehouse": warehouse},
        run_config={"ops": {"migrate_events_table": {"config": {"dry_run": dry_run}}}},
        raise_on_error=raise_on_error,
    )


def _job_metadata(result: dg.ExecuteInProcessResult) -> dict:
    for event in result.all_node_events:
        if event.event_type_value == "STEP_OUTPUT":
            return {k: getattr(v, "value", v) for k, v in event.step_output_data.metadata.items()}
    raise AssertionError("no output")


def _rows(warehouse, table: str = TABLE) -> pd.DataFrame:
    return warehouse.query(
        f"SELECT event_id, event_date, inserted_at, JSON_VALUE(properties, '$.v') AS v "
        f"FROM `{DATASET}.{table}` ORDER BY event_date, event_id"
    )


def test_an_old_shape_table_fails_the_run_naming_the_difference_and_the_command(warehouse, mixpanel_stub, mixpanel):
    _seed_old_table(warehouse)
    mixpanel_stub.add_events("2024-06-05", [mp_event("app_open", ts("2024-06-05T12:00:00"), "u2", "new-1")])
    result = materialize_events(warehouse, mixpanel, "2024-06-05", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message if failure.step_failure_data.error else ""
    message += failure.step_failure_data.user_failure_data.description if failure.step_failure_data.user_failure_data else ""
    assert "no column `event_date` (DATE)" in message
    assert migrate.MIGRATION_COMMAND in message
    if warehouse.engine == "bigquery":  # read from the table's metadata
        assert "partitioned by `event_timestamp` (DAY), expected `event_date` (DAY)" in message
        assert "clustered by event_name, expected event_name, event_id" in message
    # nothing was written: no column added, no row
    layout = warehouse.table_layout(DATASET, TABLE)
    assert "event_date" not in layout.column_types()
    assert int(warehouse.query(f"SELECT COUNT(*) AS n FROM `{DATASET}.{TABLE}`")["n"].iloc[0]) == len(OLD_ROWS)


def test_the_migration_job_moves_every_row_once_and_keeps_the_old_table(warehouse, mixpanel_stub, mixpanel):
    _seed_old_table(warehouse)
    result = _run_job(warehouse)
    meta = _job_metadata(result)
    assert meta["status"] == "migrated"
    assert meta["source_rows"] == 7 and meta["migrated_rows"] == 4 and meta["duplicates_removed"] == 3
    # the new layout: the check passes and ingestion can run
    assert migrate.layout_problems(warehouse.table_layout(DATASET, TABLE)) == []
    rows = _rows(warehouse)
    assert [(r["event_id"], str(r["event_date"])) for r in rows.to_dict("records")] == [
        ("a", "2024-06-04"), ("a", "2024-06-05"), ("b", "2024-06-05"), ("c", "2024-06-05"),
    ]
    first = rows[(rows["event_id"] == "a") & (rows["event_date"].astype(str) == "2024-06-04")].iloc[0]
    assert first["v"] == "1"  # the row loaded first wins, as in the ingestion
    assert first["inserted_at"].to_pydatetime() == ts("2024-06-04T10:15:00")
    # the old table is kept, untouched, under the backup name
    backup = meta["backup_table"].split(".", 1)[1]
    assert backup.startswith(f"{TABLE}{migrate.BACKUP_INFIX}")
    assert len(warehouse.query(f"SELECT event_id FROM `{DATASET}.{backup}`")) == len(OLD_ROWS)
    assert not warehouse.table_exists(DATASET, f"{TABLE}{migrate.MIGRATING_SUFFIX}")
    # ingestion now works on the migrated table and re-exported old events stay single
    mixpanel_stub.add_events("2024-06-05", [
        mp_event("app_open", ts("2024-06-05T23:59:59"), "u1", "b"),  # already migrated
        mp_event("app_open", ts("2024-06-05T12:00:00"), "u2", "new-1"),
    ])
    meta_ingest = metadata_of(materialize_events(warehouse, mixpanel, "2024-06-05"), EVENTS_KEY)
    assert meta_ingest["rows_inserted"] == 1 and meta_ingest["rows_already_loaded"] == 1
    ids = warehouse.query(f"SELECT event_id FROM `{DATASET}.{TABLE}` WHERE event_date = '2024-06-05'")["event_id"]
    assert sorted(ids) == ["a", "b", "c", "new-1"]
    # running the job again changes nothing
    assert _job_metadata(_run_job(warehouse))["status"] == "already in the new layout"


def test_a_dry_run_reports_and_changes_nothing(warehouse):
    _seed_old_table(warehouse)
    meta = _job_metadata(_run_job(warehouse, dry_run=True))
    assert meta["status"] == "dry run"
    assert meta["source_rows"] == 7 and meta["migrated_rows"] == 4
    assert "no column `event_date`" in meta["differences"]
    assert "event_date" not in warehouse.table_layout(DATASET, TABLE).column_types()


def test_rows_without_a_key_stop_the_migration_before_any_change(warehouse):
    rows = [*OLD_ROWS, {**_old_row("x", ts("2024-06-05T01:00:00"), ts("2024-06-05T01:15:00")), "event_id": None}]
    _seed_old_table(warehouse, rows)
    result = _run_job(warehouse, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "1 row(s) without event_id" in failure.step_failure_data.user_failure_data.description
    assert "event_date" not in warehouse.table_layout(DATASET, TABLE).column_types()
    assert not warehouse.table_exists(DATASET, f"{TABLE}{migrate.MIGRATING_SUFFIX}")


def test_a_migration_interrupted_between_the_renames_is_completed(warehouse):
    _seed_old_table(warehouse)
    _run_job(warehouse)
    # as if the process died after renaming the old table away
    warehouse.rename_table(DATASET, TABLE, f"{TABLE}{migrate.MIGRATING_SUFFIX}")
    assert _job_metadata(_run_job(warehouse))["status"] == "completed the swap"
    assert len(_rows(warehouse)) == 4


def test_a_table_in_the_platform_layout_passes_the_check(warehouse):
    ensure_events_table(warehouse, DATASET, TABLE)
    assert migrate.layout_problems(warehouse.table_layout(DATASET, TABLE)) == []
    ensure_events_table(warehouse, DATASET, TABLE)  # and set-up passes again


def test_layout_problems_name_each_difference():
    from analytics_platform.resources.warehouse import TableLayout

    new = TableLayout(tuple((c.name, c.type) for c in EVENTS_SCHEMA), "event_date DAY", ("event_name", "event_id"))
    assert migrate.layout_problems(new) == []
    typed = TableLayout(tuple((c.name, "STRING" if c.name == "properties" else c.type) for c in EVENTS_SCHEMA),
                        "event_timestamp HOUR", ())
    assert migrate.layout_problems(typed) == [
        "column `properties` is STRING, expected JSON",
        "partitioned by `event_timestamp` (HOUR), expected `event_date` (DAY)",
        "clustered by nothing, expected event_name, event_id",
    ]
    no_optional = TableLayout(tuple((c.name, c.type) for c in EVENTS_SCHEMA if c.name not in ("os", "device_id")),
                              physical=False)
    assert migrate.layout_problems(no_optional) == []  # added by ensure_table


def test_the_documented_command_runs_the_migration(tmp_path):
    """`dagster job execute -m analytics_platform.definitions -j mixpanel_migrate_events_table`
    on the local warehouse (DuckDB)."""
    data = tmp_path / "data"
    warehouse = DuckDBWarehouse(path=str(data / "warehouse.duckdb"))
    _seed_old_table(warehouse)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGQUERY_", "DAGSTER_PG"))}
    env.update(PYTHONPATH=str(REPO), ANALYTICS_ENV="local", ANALYTICS_DATA_DIR=str(data),
               DAGSTER_HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    args = migrate.MIGRATION_COMMAND.split()
    proc = subprocess.run([str(Path(sys.executable).parent / args[0]), *args[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert migrate.layout_problems(warehouse.table_layout(DATASET, TABLE)) == []
    assert len(_rows(warehouse)) == 4


def test_the_cli_reports_then_migrates(tmp_path):
    """`python -m analytics_platform.mixpanel.migrate [--dry-run]` with the local settings."""
    data = tmp_path / "data"
    warehouse = DuckDBWarehouse(path=str(data / "warehouse.duckdb"))
    _seed_old_table(warehouse)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGQUERY_", "DAGSTER_PG"))}
    env.update(PYTHONPATH=str(REPO), ANALYTICS_ENV="local", ANALYTICS_DATA_DIR=str(data))
    command = [sys.executable, "-m", "analytics_platform.mixpanel.migrate"]
    dry = subprocess.run([*command, "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "'status': 'dry run'" in dry.stdout and "'duplicates_removed': 3" in dry.stdout
    assert "event_date" not in warehouse.table_layout(DATASET, TABLE).column_types()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'status': 'migrated'" in done.stdout
    assert migrate.layout_problems(warehouse.table_layout(DATASET, TABLE)) == []
