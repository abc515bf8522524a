"""Issue 17.6: checks that guard a side effect downstream in the same run are blocking.

The temp users' ``distinct_id_unique_not_null`` check runs before the Mixpanel marking of
the same run: with a duplicated temp user in the table the check fails, the marking step
does not run and Mixpanel receives nothing; with a clean table the same run marks.
(Real DuckDB warehouse, Mixpanel stub over HTTP.)
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.cohorts import tables as T
from analytics_platform.cohorts.assets import COHORT_KEY, TEMP_USERS_KEY
from analytics_platform.cohorts.checks import distinct_id_unique_not_null
from analytics_platform.posthog.checks import CHECK_UNIQUE, sessions_check_specs
from analytics_platform.posthog.assets import SESSIONS_KEY
from analytics_platform.resources.local.slack_outbox import LocalSlack
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform_tests.cohorts.conftest import (
    COHORT_DATASET,
    materialize,
    privacy,
    restore,
    seed_events,
    seed_temp_users,
    ts,
)

AS_OF = "2024-06-06T00:00:00Z"
T0 = ts("2024-06-05T10:00:00")


@pytest.fixture
def cohort_env(monkeypatch, tmp_path):
    for name in ("BIGQUERY_DATASET", "BIGQUERY_TABLE", "COHORT_DATASET", "COHORT_MARKER", "MIXPANEL_PROJECT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))


def _run(duckdb_warehouse, mixpanel_stub, tmp_path):
    seed_events(duckdb_warehouse, [privacy("new-user", T0, "d-n"), restore("real-n", T0 + dt.timedelta(seconds=5), "d-n")])
    return materialize(
        duckdb_warehouse,
        MixpanelResource(**mixpanel_stub.resource_kwargs()),
        LocalSlack(outbox_path=str(tmp_path / "slack.jsonl")),
        as_of=AS_OF,
        raise_on_error=False,
    )


def test_the_uniqueness_check_is_blocking():
    (spec,) = distinct_id_unique_not_null.check_specs
    assert spec.blocking
    assert {s.name: s.blocking for s in sessions_check_specs(SESSIONS_KEY)}[CHECK_UNIQUE] is True


def test_a_failing_uniqueness_check_stops_the_mixpanel_marking(cohort_env, duckdb_warehouse, mixpanel_stub, tmp_path):
    seed_temp_users(duckdb_warehouse, ["dup-user"])
    duplicate = duckdb_warehouse.query(f"SELECT * FROM `{COHORT_DATASET}.{T.TEMP_USERS_TABLE}`")
    duckdb_warehouse.load(pd.DataFrame(duplicate), COHORT_DATASET, T.TEMP_USERS_TABLE, T.TEMP_USERS_SCHEMA, mode="append")

    result = _run(duckdb_warehouse, mixpanel_stub, tmp_path)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["distinct_id_unique_not_null"].passed
    assert not result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert TEMP_USERS_KEY in materialized and COHORT_KEY not in materialized
    started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert "peerplay__state_loss_temp_users" in started
    assert "mixpanel__state_loss_temp_user_cohort" not in started  # the marking step never ran
    assert mixpanel_stub.engage_requests == []  # no profile touched


def test_a_passing_uniqueness_check_lets_the_marking_run(cohort_env, duckdb_warehouse, mixpanel_stub, tmp_path):
    seed_temp_users(duckdb_warehouse, ["known-user"])
    result = _run(duckdb_warehouse, mixpanel_stub, tmp_path)
    assert result.success
    sent = {u["$distinct_id"] for r in mixpanel_stub.engage_requests for u in r["updates"] or []}
    assert sent == {"known-user", "new-user"}
