"""Acceptance 4: ``dagster asset materialize --select mixpanel_data/mixpanel_events
--partition-range A...B`` runs as ONE run with at most one export query per contiguous
range (here: one), against the Mixpanel stub, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from analytics_platform.resources.warehouse import DuckDBWarehouse
from analytics_platform_tests.mixpanel.conftest import mp_event, ts

ROOT = Path(__file__).resolve().parents[2]


def test_partition_range_from_the_cli_is_one_run_and_one_export_query(tmp_path, mixpanel_stub, app_db_url):
    for day in ("2024-06-03", "2024-06-04", "2024-06-05"):
        mixpanel_stub.add_events(
            day, [mp_event("app_open", ts(f"{day}T0{i}:00:00"), f"u{i}", f"{day}-{i}") for i in range(3)]
        )
    home = tmp_path / "dagster_home"
    home.mkdir()
    duckdb_path = tmp_path / "w.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXPANEL_", "SLACK_", "BIGQUERY_", "DAGSTER_"))}
    env.update(
        mixpanel_stub.env("service_account"),
        ANALYTICS_ENV="local",
        ANALYTICS_DATA_DIR=str(tmp_path / "data"),
        DUCKDB_PATH=str(duckdb_path),
        DAGSTER_HOME=str(home),
        APP_DATABASE_URL=app_db_url,  # the export budget's ledger
    )
    cli = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [
            str(cli), "asset", "materialize", "-m", "analytics_platform.definitions",
            "--select", "mixpanel_data/mixpanel_events",
            "--partition-range", "2024-06-03...2024-06-05",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # one export query for the contiguous range
    requests = mixpanel_stub.export_requests
    assert len(requests) == 1
    assert (requests[0]["params"]["from_date"], requests[0]["params"]["to_date"]) == ("2024-06-03", "2024-06-05")
    # one run, materializing the three partitions
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 1
        keys = instance.get_materialized_partitions(dg.AssetKey(["mixpanel_data", "mixpanel_events"]))
        assert keys == {"2024-06-03", "2024-06-04", "2024-06-05"}
    rows = DuckDBWarehouse(path=str(duckdb_path)).query(
        "SELECT event_date, COUNT(*) AS n FROM `mixpanel_data.mixpanel_events` GROUP BY event_date ORDER BY event_date"
    )
    assert [str(d) for d in rows["event_date"]] == ["2024-06-03", "2024-06-04", "2024-06-05"]
    assert list(rows["n"]) == [3, 3, 3]
