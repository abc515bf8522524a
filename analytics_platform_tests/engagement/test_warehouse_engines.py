"""The warehouse aggregation gives identical results on DuckDB (local) and on the BigQuery
API emulator (the production client), and both equal the per-user reference of the spec;
the one-off move of an old PostgreSQL mirror into the warehouse."""

from __future__ import annotations

import pytest

from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY
from analytics_platform.engagement.rules import MILESTONE_FLAGS, SIGNAL_COUNTS, SIGNAL_FLAGS
from analytics_platform.engagement.store import MILESTONES_TABLE, SIGNALS_TABLE
from analytics_platform_tests.engagement.conftest import _engagement_db, materialize, user_ids_config
from analytics_platform_tests.engagement.test_against_reference import _expected, _random_world


def _strip(rows):
    return {u: {k: v for k, v in r.items() if k != "computed_at"} for u, r in rows.items()}


@pytest.mark.bigquery
def test_duckdb_and_bigquery_give_identical_results(app_db, duckdb_warehouse, bq_warehouse):
    results = {}
    for name, warehouse in (("duckdb", duckdb_warehouse), ("bigquery", bq_warehouse)):
        db = _engagement_db(app_db, warehouse)
        db.run("TRUNCATE user_goals, app_goal_sub_categories, apps, goals, goal_sub_categories CASCADE")
        db.run("TRUNCATE user_engagement_signals, user_milestones")
        user_goals, events, service = _random_world(db, seed=5)
        materialize(app_db, [SIGNALS_KEY, MILESTONES_KEY], warehouse=warehouse)
        signals, milestones = _strip(db.rows(SIGNALS_TABLE)), _strip(db.rows(MILESTONES_TABLE))
        expected = _expected(user_goals, events, service)
        assert set(signals) == set(expected), name
        for user, exp in expected.items():
            assert {f: signals[user][f] for f in SIGNAL_FLAGS} == exp["signals"], (name, user)
            assert {c: signals[user][c] for c in SIGNAL_COUNTS} == exp["counts"], (name, user)
            assert {f: milestones[user][f] for f in MILESTONE_FLAGS} == exp["milestones"], (name, user)
        # user_ids mode on the same engine
        subset = sorted(expected)[::9]
        materialize(app_db, [SIGNALS_KEY, MILESTONES_KEY], run_config=user_ids_config(subset), warehouse=warehouse)
        assert _strip(db.rows(SIGNALS_TABLE)) == signals, name
        results[name] = (signals, milestones, db.aggregates())
    assert results["duckdb"][:2] == results["bigquery"][:2]
    assert results["duckdb"][2].keys() == results["bigquery"][2].keys()
