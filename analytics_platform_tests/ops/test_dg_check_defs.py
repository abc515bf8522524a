"""Issue 17.6: `dg check defs` (Dagster's project checker, [tool.dg] in pyproject.toml) loads
the code location cleanly as part of the suite (and so of CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dg_check_defs_passes():
    dg_cli = Path(sys.executable).with_name("dg")
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    proc = subprocess.run([str(dg_cli), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_warehouse_table_assets_carry_their_column_schema():
    """Issue 17.6: the UI's columns tab: every asset that is a warehouse table declares
    `dagster/column_schema` from the same Column declarations the tables are created from."""
    from analytics_platform.definitions import defs
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA

    graph = defs.get_repository_def().asset_graph
    tables = ["mixpanel_data/mixpanel_events", "mixpanel_data/event_anomalies", "peerplay/state_loss_temp_users",
              "posthog_aggregated/sessions", "posthog_aggregated/persons"]
    for key in tables:
        schema = graph.get(dg_key(key)).metadata.get("dagster/column_schema")
        assert schema is not None and schema.columns, key
    events = graph.get(dg_key("mixpanel_data/mixpanel_events")).metadata["dagster/column_schema"]
    assert [c.name for c in events.columns] == [c.name for c in EVENTS_SCHEMA]
    assert events.columns[0].constraints.nullable is False  # event_id is required


def dg_key(key: str):
    import dagster as dg

    return dg.AssetKey(key.split("/"))
