"""Issue 14.2: Mixpanel ends some 200 export bodies early - a `terminated early` line, or a
body that stops mid-line.  Both are transient: the export is retried, the cut body is never
loaded as complete, and neither the marker nor the fragment is quarantined as a malformed
line.  When every attempt is cut the run fails naming the cause and the partition keeps
its previous rows.  On DuckDB and on the BigQuery emulator (the ``warehouse`` fixture)."""

from __future__ import annotations

import pytest

from analytics_platform_tests.mixpanel.conftest import (
    EVENTS_KEY,
    events_rows,
    materialize_events,
    metadata_of,
    mp_event,
    rejected_rows,
    ts,
)

DAY = "2024-06-05"


def _day_events(count: int, prefix: str = "t") -> list[dict]:
    return [mp_event("app_open", ts(f"2024-06-05T10:{i // 60:02d}:{i % 60:02d}"), f"u{i}", f"{prefix}{i}") for i in range(count)]


@pytest.mark.parametrize("mode", ["marker", "midline"])
def test_a_truncated_body_is_retried_and_never_loaded_as_complete(warehouse, mixpanel_stub, mixpanel, mode):
    mixpanel_stub.add_events(DAY, _day_events(40))
    mixpanel_stub.truncate_export(after_lines=15, mode=mode)
    result = materialize_events(warehouse, mixpanel, DAY)
    requests = mixpanel_stub.export_requests
    assert [r.get("truncated") for r in requests] == [mode, None]
    assert len(events_rows(warehouse)) == 40
    assert len(rejected_rows(warehouse)) == 0  # neither the marker nor the cut fragment
    meta = metadata_of(result, EVENTS_KEY)
    assert meta["export_requests"] == 2
    assert meta["rows_rejected"] == 0
    assert meta["lines_fetched"] == 40


def test_every_attempt_truncated_fails_clearly_and_keeps_the_previous_rows(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(DAY, _day_events(10, "old"))
    materialize_events(warehouse, mixpanel, DAY)
    before = events_rows(warehouse)
    mixpanel_stub.add_events(DAY, _day_events(30, "new"))
    mixpanel_stub.truncate_export(after_lines=20, mode="marker", times=mixpanel.max_attempts)
    result = materialize_events(warehouse, mixpanel, DAY, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.event_specific_data.error)
    assert "truncated" in message and "terminated early" in message
    assert len(mixpanel_stub.export_requests) == 1 + mixpanel.max_attempts
    after = events_rows(warehouse)
    assert after.equals(before)  # nothing of the cut bodies was loaded
    assert len(rejected_rows(warehouse)) == 0


def test_an_empty_body_is_a_complete_export(warehouse, mixpanel_stub, mixpanel):
    """No event that day: a zero-byte 200 body is complete (not 'stopped mid-line')."""
    result = materialize_events(warehouse, mixpanel, DAY)
    assert result.success
    assert len(mixpanel_stub.export_requests) == 1
    assert metadata_of(result, EVENTS_KEY)["dagster/row_count"] == 0
