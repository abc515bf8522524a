"""Acceptance 1: Mixpanel export faults — a 429 storm (10 in a row with Retry-After), 5xx
bursts and a connection reset halfway through a day's stream.  The partition ends complete
(every served event exactly once) or unchanged (byte for byte, ``inserted_at`` included),
never half-written; a later run completes it.

The export is streamed to a ``.part`` file and loaded only once the whole response has
arrived, so a fault can only cost a retry (or the run), never a partial load.
"""

from __future__ import annotations

import time

import pytest

from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform_tests.mixpanel.conftest import materialize_events
from analytics_platform_tests.reliability.helpers import event_rows, records

DAY = "2024-06-05"
NODE = "mixpanel_data__mixpanel_events"


def _resource(stub, **overrides) -> MixpanelResource:
    """The stub with fast backoff (the production defaults wait 2..60 s)."""
    kwargs = {**stub.resource_kwargs(), "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05}
    kwargs.update(overrides)
    return MixpanelResource(**kwargs)


def _day_with_earlier_rows(warehouse, stub, first: int, later: int) -> list[tuple]:
    """A refresh loaded ``first`` events of the day; since then ``later`` more were served.
    Returns the partition as it is now (the 'unchanged' reference)."""
    stub.add_generated(DAY, first, event="app_open")
    materialize_events(warehouse, _resource(stub), DAY)
    assert len(event_rows(warehouse, DAY)) == first
    stub.clear_data()
    stub.add_generated(DAY, first + later, event="app_open")  # same first ids, then new ones
    stub.requests.clear()
    return records(event_rows(warehouse, DAY))


def _assert_complete(warehouse, before: list[tuple], total: int) -> None:
    rows = event_rows(warehouse, DAY)
    assert len(rows) == total
    assert rows["event_id"].is_unique
    assert set(rows["event_id"]) == {f"{DAY}-app_open-{i}" for i in range(total)}
    kept = {r[0]: r for r in records(rows)}
    for old in before:  # rows loaded earlier are untouched (inserted_at included)
        assert kept[old[0]] == old


def _statuses(stub) -> list:
    return [r["status"] for r in stub.export_requests]


def test_a_storm_of_ten_429s_is_ridden_out_and_the_day_ends_complete(duckdb_warehouse, mixpanel_stub):
    before = _day_with_earlier_rows(duckdb_warehouse, mixpanel_stub, 300, 700)
    mixpanel_stub.fail_export(429, times=2, retry_after=1)
    mixpanel_stub.fail_export(429, times=8, retry_after=0)
    # the computed backoff is huge: only honouring Retry-After keeps this test fast
    mixpanel = _resource(mixpanel_stub, max_attempts=12, backoff_initial_seconds=30, backoff_max_seconds=60)
    started = time.monotonic()
    result = materialize_events(duckdb_warehouse, mixpanel, DAY)
    elapsed = time.monotonic() - started
    assert _statuses(mixpanel_stub) == [429] * 10 + [200]
    assert 2.0 <= elapsed < 30  # Retry-After: 1, 1, then 0 x 8
    _assert_complete(duckdb_warehouse, before, 1000)
    meta = {k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node(NODE)[0].metadata.items()}
    assert (meta["export_requests"], meta["rows_inserted"], meta["rows_already_loaded"]) == (11, 700, 300)


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("bigquery", marks=pytest.mark.bigquery)])
def test_a_storm_longer_than_the_retry_budget_fails_the_run_and_leaves_the_day_unchanged(engine, request, mixpanel_stub):
    warehouse = request.getfixturevalue("duckdb_warehouse" if engine == "duckdb" else "bq_warehouse")
    before = _day_with_earlier_rows(warehouse, mixpanel_stub, 300, 700)
    mixpanel_stub.fail_export(429, times=10, retry_after=0)
    mixpanel = _resource(mixpanel_stub)  # max_attempts 5 (production: 8): fewer than 10
    failed = materialize_events(warehouse, mixpanel, DAY, raise_on_error=False)
    assert not failed.success
    error = failed.failure_data_for_node(NODE)
    text = str(error.user_failure_data.description if error.user_failure_data else error.error.message)
    assert "failed after 5 attempts" in text and "429" in text
    assert _statuses(mixpanel_stub) == [429] * 5
    assert records(event_rows(warehouse, DAY)) == before  # unchanged, not half-written

    # the storm goes on for 5 more answers, then ends: the next scheduled run completes the day
    completed = materialize_events(warehouse, _resource(mixpanel_stub, max_attempts=8), DAY)
    assert completed.success
    assert _statuses(mixpanel_stub) == [429] * 10 + [200]
    _assert_complete(warehouse, before, 1000)


def test_5xx_bursts_are_retried_and_the_day_ends_complete(duckdb_warehouse, mixpanel_stub):
    before = _day_with_earlier_rows(duckdb_warehouse, mixpanel_stub, 200, 800)
    burst = [500, 502, 503, 504, 500, 503]
    for status in burst:
        mixpanel_stub.fail_export(status)
    materialize_events(duckdb_warehouse, _resource(mixpanel_stub, max_attempts=8), DAY)
    assert _statuses(mixpanel_stub) == burst + [200]
    _assert_complete(duckdb_warehouse, before, 1000)


def test_5xx_burst_outlasting_the_retries_leaves_the_day_unchanged(duckdb_warehouse, mixpanel_stub):
    before = _day_with_earlier_rows(duckdb_warehouse, mixpanel_stub, 200, 800)
    mixpanel_stub.fail_export(503, times=5)
    failed = materialize_events(duckdb_warehouse, _resource(mixpanel_stub), DAY, raise_on_error=False)
    assert not failed.success
    assert records(event_rows(duckdb_warehouse, DAY)) == before
    materialize_events(duckdb_warehouse, _resource(mixpanel_stub), DAY)
    _assert_complete(duckdb_warehouse, before, 1000)


def test_a_connection_reset_halfway_through_the_stream_restarts_the_day(duckdb_warehouse, mixpanel_stub):
    before = _day_with_earlier_rows(duckdb_warehouse, mixpanel_stub, 1000, 3000)
    mixpanel_stub.reset_export_after(2000)  # halfway through the 4000 lines of the day
    materialize_events(duckdb_warehouse, _resource(mixpanel_stub), DAY)
    requests = mixpanel_stub.export_requests
    assert [r.get("reset", False) for r in requests] == [True, False]
    assert [r["lines_sent"] for r in requests] == [2000, 4000]
    _assert_complete(duckdb_warehouse, before, 4000)


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("bigquery", marks=pytest.mark.bigquery)])
def test_resets_on_every_attempt_fail_the_run_without_a_partial_load(engine, request, mixpanel_stub):
    warehouse = request.getfixturevalue("duckdb_warehouse" if engine == "duckdb" else "bq_warehouse")
    before = _day_with_earlier_rows(warehouse, mixpanel_stub, 1000, 3000)
    mixpanel_stub.reset_export_after(2000, times=5)
    failed = materialize_events(warehouse, _resource(mixpanel_stub), DAY, raise_on_error=False)
    assert not failed.success
    assert [r["lines_sent"] for r in mixpanel_stub.export_requests] == [2000] * 5
    # 2000 new lines arrived five times, none of them was loaded
    assert records(event_rows(warehouse, DAY)) == before
    materialize_events(warehouse, _resource(mixpanel_stub), DAY)
    _assert_complete(warehouse, before, 4000)
