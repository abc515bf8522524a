"""The daily job at 11:00 UTC runs both assets; a same-day re-run changes nothing and
sends nothing."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from analytics_platform.cohorts.assets import COHORT_KEY, TEMP_USERS_KEY
from analytics_platform.cohorts.definitions import defs
from analytics_platform.cohorts.schedules import temp_users_cohort_daily, temp_users_cohort_job
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource
from analytics_platform_tests.cohorts.conftest import (
    event,
    materialize,
    metadata_of,
    privacy,
    restore,
    seed_events,
    temp_users,
    ts,
)


def test_schedule_is_daily_at_11_utc_with_as_of_the_tick():
    assert temp_users_cohort_daily.cron_schedule == "0 11 * * *"
    assert temp_users_cohort_daily.execution_timezone == "UTC"
    assert temp_users_cohort_daily.job_name == "temp_users_cohort_job"
    tick = dt.datetime(2024, 6, 6, 11, 0, tzinfo=dt.timezone.utc)
    request = temp_users_cohort_daily(dg.build_schedule_context(scheduled_execution_time=tick))
    assert request.run_config == {"ops": {"peerplay__state_loss_temp_users": {"config": {"as_of": "2024-06-06T11:00:00Z"}}}}
    assert request.run_key == "temp_users_cohort:2024-06-06T11:00:00Z"


def test_job_selects_both_assets():
    resolved = dg.Definitions.merge(
        defs, dg.Definitions(resources={"warehouse": object(), "mixpanel": object(), "slack": object()})
    )
    job = resolved.resolve_job_def("temp_users_cohort_job")
    keys = {k for node in job.asset_layer.asset_graph.asset_nodes for k in [node.key] if node.is_executable}
    assert {TEMP_USERS_KEY, COHORT_KEY} <= keys
    assert temp_users_cohort_job.name == "temp_users_cohort_job"


def test_same_day_rerun_changes_nothing_and_sends_nothing(duckdb_warehouse, mixpanel_stub, slack_stub, tmp_path):
    mixpanel = MixpanelResource(**mixpanel_stub.resource_kwargs())
    slack = SlackResource(**slack_stub.resource_kwargs(), default_channel="#data-alerts")
    seed_events(
        duckdb_warehouse,
        [
            privacy("tmp-1", ts("2024-06-05T09:00:00"), "d1"),
            restore("real-1", ts("2024-06-05T09:01:00"), "d1"),
            privacy("tmp-2", ts("2024-06-04T12:00:00"), "d2"),
            restore("real-2", ts("2024-06-04T12:00:05"), "d2"),
            event("level_complete", "tmp-2", ts("2024-06-05T20:00:00")),  # active yesterday
        ],
    )
    as_of = "2024-06-06T11:00:00Z"
    first = materialize(duckdb_warehouse, mixpanel, slack, as_of=as_of)
    snapshot = temp_users(duckdb_warehouse)
    requests, messages = len(mixpanel_stub.requests), len(slack_stub.messages)
    assert (requests, messages) == (1, 1)
    assert metadata_of(first, COHORT_KEY)["users_marked"] == 2

    # the same day, later (a manual re-run, or a retry of the scheduled run)
    second = materialize(duckdb_warehouse, mixpanel, slack, as_of="2024-06-06T13:30:00Z")

    assert len(mixpanel_stub.requests) == requests
    assert len(slack_stub.messages) == messages
    assert temp_users(duckdb_warehouse).equals(snapshot)
    assert metadata_of(second, TEMP_USERS_KEY)["inserted"] == 0
    assert metadata_of(second, COHORT_KEY)["users_marked"] == 0
