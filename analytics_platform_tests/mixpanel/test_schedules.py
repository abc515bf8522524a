"""Schedules: what each tick asks for, and no pile-up while a run is queued or running."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import pytest

from analytics_platform.common import UTC
from analytics_platform.mixpanel import schedules as S


def _context(instance, when: dt.datetime) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(instance=instance, scheduled_execution_time=when)


def _add_run(instance: dg.DagsterInstance, job_name: str, tags: dict, status: dg.DagsterRunStatus) -> None:
    """A run record in ``status`` (what the daemon would have created)."""
    instance.add_run(dg.DagsterRun(job_name=job_name, run_id=uuid.uuid4().hex, tags=tags, status=status))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_definitions_cron_and_timezone():
    by_name = {s.name: s for s in S.SCHEDULES}
    assert by_name["mixpanel_events_every_15_minutes"].cron_schedule == "*/15 * * * *"
    assert by_name["mixpanel_events_late_sweep"].cron_schedule == "0 1 * * *"
    assert by_name["mixpanel_event_anomalies_every_5_minutes"].cron_schedule == "*/5 * * * *"
    assert all(s.execution_timezone == "UTC" for s in S.SCHEDULES)


def test_refresh_asks_for_the_current_utc_day(instance):
    request = S.refresh_request(_context(instance, dt.datetime(2024, 6, 5, 23, 45, tzinfo=UTC)))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2024-06-05"
    assert request.tags[S.EXPORT_TAG] and request.tags[S.INGEST_TAG]


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
def test_refresh_skips_while_an_ingestion_run_is_queued_or_running(instance, status):
    assert dg.DagsterRunStatus.QUEUED in S.IN_PROGRESS  # (a QUEUED record needs a code location to create)
    _add_run(instance, "mixpanel_events_refresh", dict(S.INGEST_TAGS), status)
    result = S.refresh_request(_context(instance, dt.datetime(2024, 6, 5, 10, 15, tzinfo=UTC)))
    assert isinstance(result, dg.SkipReason)


def test_refresh_runs_again_once_the_previous_run_finished(instance):
    _add_run(instance, "mixpanel_events_refresh", dict(S.INGEST_TAGS), dg.DagsterRunStatus.SUCCESS)
    _add_run(instance, "mixpanel_events_refresh", dict(S.INGEST_TAGS), dg.DagsterRunStatus.FAILURE)
    assert isinstance(S.refresh_request(_context(instance, dt.datetime(2024, 6, 5, 10, 15, tzinfo=UTC))), dg.RunRequest)


def test_late_sweep_is_one_run_over_the_previous_days(instance, monkeypatch):
    monkeypatch.setenv("MIXPANEL_LATE_DAYS", "3")
    request = S.late_sweep_request(_context(instance, dt.datetime(2024, 6, 5, 1, 0, tzinfo=UTC)))
    assert request.tags[S.RANGE_START_TAG] == "2024-06-02"
    assert request.tags[S.RANGE_END_TAG] == "2024-06-04"
    assert request.partition_key is None
    monkeypatch.setenv("MIXPANEL_LATE_DAYS", "0")
    assert isinstance(S.late_sweep_request(_context(instance, dt.datetime(2024, 6, 5, 1, 0, tzinfo=UTC))), dg.SkipReason)


def test_detection_passes_the_tick_as_as_of_and_skips_while_running(instance):
    when = dt.datetime(2024, 6, 5, 10, 5, tzinfo=UTC)
    request = S.detect_request(_context(instance, when))
    assert request.run_config["ops"]["mixpanel_data__event_anomalies"]["config"]["as_of"] == when.isoformat()
    _add_run(instance, "mixpanel_event_anomalies", dict(S.DETECT_TAGS), dg.DagsterRunStatus.STARTED)
    assert isinstance(S.detect_request(_context(instance, when)), dg.SkipReason)


def test_late_sweep_run_executes_the_range_in_one_run_with_one_query(duckdb_warehouse, mixpanel_stub, mixpanel, instance, monkeypatch):
    from analytics_platform.mixpanel.assets import mixpanel_events
    from analytics_platform_tests.mixpanel.conftest import events_rows, mp_event, ts

    monkeypatch.setenv("MIXPANEL_LATE_DAYS", "2")
    for day in ("2024-06-03", "2024-06-04"):
        mixpanel_stub.add_events(day, [mp_event("app_open", ts(f"{day}T12:00:00"), "u", f"late-{day}")])
    request = S.late_sweep_request(_context(instance, dt.datetime(2024, 6, 5, 1, 0, tzinfo=UTC)))
    defs = dg.Definitions(assets=[mixpanel_events], jobs=[S.events_refresh_job],
                          resources={"warehouse": duckdb_warehouse, "mixpanel": mixpanel})
    result = defs.resolve_job_def("mixpanel_events_refresh").execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    assert len(mixpanel_stub.export_requests) == 1
    assert sorted(events_rows(duckdb_warehouse)["event_id"]) == ["late-2024-06-03", "late-2024-06-04"]
    assert instance.get_materialized_partitions(mixpanel_events.key) == {"2024-06-03", "2024-06-04"}
