"""The kpis demo plug-in: deterministic rows, seeded into a real PostgreSQL, then the demo
steps through Dagster."""

from __future__ import annotations

import dagster as dg

from analytics_platform.demo import DemoContext
from analytics_platform.demo.runner import materialize_step
from analytics_platform.demo import kpis as demo
from analytics_platform.kpis.definitions import defs as kpi_defs
from analytics_platform.settings import get_settings

from .helpers import slack_outbox


def test_demo_rows_are_deterministic():
    ctx = DemoContext(settings=get_settings(), resources={})
    assert demo.build_rows(ctx) == demo.build_rows(ctx)


def test_demo_seed_and_steps(bare_db, app_db, tmp_path):
    resources = {"app_db": app_db, "slack": slack_outbox(tmp_path)}
    ctx = DemoContext(settings=get_settings(), resources=resources)
    demo.seed(ctx)
    demo.seed(ctx)  # re-seeding replaces the demo rows, no duplicates
    assert len(bare_db.table("interest_goal")) == len(demo.build_rows(ctx)["interest_goal"])
    defs = dg.Definitions.merge(kpi_defs, dg.Definitions(resources=resources))
    instance = dg.DagsterInstance.ephemeral()
    dry, real = demo.steps(ctx)
    assert materialize_step(defs, dry, instance).get_asset_materialization_events() == []
    assert bare_db.table("weekly_kpi_recalc_runs") == []  # the dry run wrote nothing (the table is migrated)
    result = materialize_step(defs, real, instance)
    [event] = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}
    n_inactive = demo.N_INACTIVE + demo.N_WITH_KPIS + 1  # + demo_bad_score
    assert meta["inactive_users"] == n_inactive
    assert (meta["processed"], meta["failed"]) == (n_inactive - 1, 1)
    assert meta["no_scores_s_only"] >= demo.N_INACTIVE // 5
    assert meta["updated"] == demo.N_WITH_KPIS
    users = {r[0]: r[2] for r in bare_db.table("weekly_kpi")}
    assert not any(u.startswith(("demo_active_", "demo_gone_")) for u in users)
    kept = users["demo_inactive_with_kpis_000"]
    assert {"I_t", "E_t", "R_t", "A_t", "P", "S"} <= set(kept) and kept["P"] != 0.5
