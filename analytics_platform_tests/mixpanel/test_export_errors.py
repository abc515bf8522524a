"""Acceptance 3: 429 (Retry-After) and 5xx from the export are retried; a 401 fails the run
with a message that names the variable to fix and contains no secret."""

from __future__ import annotations

import time

import pytest

from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform_tests.mixpanel.conftest import EVENTS_KEY, events_rows, materialize_events, metadata_of, mp_event, ts

DAY = "2024-06-05"


def _seed(stub) -> None:
    stub.add_events(DAY, [mp_event("app_open", ts("2024-06-05T10:00:00"), "u1", "r1")])


def test_429_with_retry_after_is_retried_and_honoured(duckdb_warehouse, mixpanel_stub, mixpanel):
    _seed(mixpanel_stub)
    mixpanel_stub.fail_export(429, times=2, retry_after=1)
    started = time.monotonic()
    result = materialize_events(duckdb_warehouse, mixpanel, DAY)
    elapsed = time.monotonic() - started
    assert [r["status"] for r in mixpanel_stub.export_requests] == [429, 429, 200]
    assert elapsed >= 2.0  # two Retry-After: 1 waits, not the 0.05 s backoff
    assert list(events_rows(duckdb_warehouse)["event_id"]) == ["r1"]
    assert metadata_of(result, EVENTS_KEY)["export_requests"] == 3


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried(duckdb_warehouse, mixpanel_stub, mixpanel, status):
    _seed(mixpanel_stub)
    mixpanel_stub.fail_export(status, times=2)
    materialize_events(duckdb_warehouse, mixpanel, DAY)
    assert [r["status"] for r in mixpanel_stub.export_requests] == [status, status, 200]
    assert list(events_rows(duckdb_warehouse)["event_id"]) == ["r1"]


def test_connection_reset_mid_stream_restarts_the_export(duckdb_warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts(f"2024-06-05T10:00:{i:02d}"), f"u{i}", f"m{i}") for i in range(50)])
    mixpanel_stub.reset_export_after(10)
    materialize_events(duckdb_warehouse, mixpanel, DAY)
    assert len(mixpanel_stub.export_requests) == 2
    assert len(events_rows(duckdb_warehouse)) == 50


@pytest.mark.parametrize("auth", ["service_account", "legacy"])
def test_401_fails_the_run_naming_the_variable_without_the_secret(duckdb_warehouse, mixpanel_stub, auth):
    _seed(mixpanel_stub)
    kwargs = mixpanel_stub.resource_kwargs(auth)
    secret = "wrong-secret-value-9f3e1c"
    if auth == "service_account":
        kwargs["service_account_secret"] = secret
        variable = "MIXPANEL_SERVICE_ACCOUNT_SECRET"
    else:
        kwargs["api_secret"] = secret
        variable = "MIXPANEL_API_SECRET"
    result = materialize_events(duckdb_warehouse, MixpanelResource(**kwargs), DAY, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("mixpanel_data__mixpanel_events")
    text = str(failure.error.message) + str(failure.user_failure_data.description if failure.user_failure_data else "")
    assert variable in text
    assert secret not in text
    assert len(mixpanel_stub.export_requests) == 1  # a 401 is never retried
    events = result.all_events
    assert not any(secret in str(e) for e in events)


def test_400_is_not_retried(duckdb_warehouse, mixpanel_stub, mixpanel):
    _seed(mixpanel_stub)
    mixpanel_stub.fail_export(400, times=1)
    result = materialize_events(duckdb_warehouse, mixpanel, DAY, raise_on_error=False)
    assert not result.success
    assert len(mixpanel_stub.export_requests) == 1


def test_a_retry_after_beyond_the_cap_fails_the_run_instead_of_sleeping(duckdb_warehouse, mixpanel_stub, mixpanel):
    """Issue 14.4: a 429 asking for an hour's wait fails at once with a clear message."""
    _seed(mixpanel_stub)
    mixpanel_stub.fail_export(429, times=1, retry_after=3600)
    started = time.monotonic()
    result = materialize_events(duckdb_warehouse, mixpanel, DAY, raise_on_error=False)
    assert time.monotonic() - started < 30
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.event_specific_data.error)
    assert "Retry-After 3600s" in message and "600s" in message
    assert len(mixpanel_stub.export_requests) == 1
