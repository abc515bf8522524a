"""The posthog demo: deterministic, quick, and it shows the edge cases it promises."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from analytics_platform.demo import DemoContext
from analytics_platform.demo.runner import materialize_step
from analytics_platform.demo import posthog as demo
from analytics_platform.posthog.definitions import defs as posthog_defs
from analytics_platform.settings import get_settings


def _run_demo(warehouse, tmp_path):
    settings = get_settings({"ANALYTICS_DATA_DIR": str(tmp_path / "data")})
    ctx = DemoContext(settings=settings, resources={"warehouse": warehouse})
    demo.seed(ctx)
    defs = dg.Definitions(assets=posthog_defs.assets, resources={"warehouse": warehouse})
    results = [materialize_step(defs, step, dg.DagsterInstance.ephemeral()) for step in demo.steps(ctx)]
    return ctx, results


def test_demo_seeds_and_materializes_with_its_edge_cases(duckdb_warehouse, tmp_path):
    ctx, results = _run_demo(duckdb_warehouse, tmp_path)
    assert all(r.success for r in results)
    wh = duckdb_warehouse
    rows = wh.query("SELECT * FROM `posthog_aggregated.sessions` ORDER BY session_id")
    by_id = {r["session_id"]: r for r in rows.to_dict("records")}
    assert len(rows) == demo.DEMO_SESSIONS + 2 and rows["session_id"].is_unique

    midnight = by_id["demo-midnight"]  # 23:59 the day before -> 00:10 on the demo day
    assert str(midnight["session_date"])[:10] == (ctx.demo_date - dt.timedelta(days=1)).isoformat()
    assert midnight["duration_seconds"] == 660 and midnight["max_scroll_depth"] == 0.5

    nofb = by_id["demo-no-firebase"]
    # no Firebase users row: no user columns, but its Firebase events are still counted
    assert pd.isna(nofb["firebase_user_id"]) and nofb["firebase_event_count"] == 1
    assert nofb["events_created_count"] == 1  # exported twice, counted once
    assert nofb["event_count"] == 2

    meta = {}
    for event in results[0].get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.partition:
            meta[mat.partition] = mat.metadata["events_without_session_id"].value
    assert meta[ctx.demo_date.isoformat()] >= 2  # the two hand-made ones at least
    persons = wh.query("SELECT COUNT(*) AS n FROM `posthog_aggregated.persons`").iloc[0]["n"]
    assert persons == rows["distinct_id"].nunique()


def test_demo_is_deterministic_and_reseeding_does_not_accumulate(duckdb_warehouse, tmp_path):
    _run_demo(duckdb_warehouse, tmp_path)
    first = duckdb_warehouse.query(
        "SELECT * EXCEPT (_loaded_at) FROM `posthog_aggregated.sessions` ORDER BY session_id"
    )
    _run_demo(duckdb_warehouse, tmp_path)  # seed again into the same warehouse
    second = duckdb_warehouse.query(
        "SELECT * EXCEPT (_loaded_at) FROM `posthog_aggregated.sessions` ORDER BY session_id"
    )
    pd.testing.assert_frame_equal(first, second)
    n = duckdb_warehouse.query("SELECT COUNT(*) AS n FROM `posthog_etl.events`").iloc[0]["n"]
    assert n == demo.DEMO_EVENTS + 8
