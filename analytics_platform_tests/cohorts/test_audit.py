"""Acceptance 3: audit-log rows for each step with the run id (both engines), and a
failed step recorded as such."""

from __future__ import annotations

import pytest

from analytics_platform.cohorts.assets import TEMP_USERS_KEY
from analytics_platform.cohorts.rules import PROCESS_NAME
from analytics_platform.cohorts.store import CohortStore
from analytics_platform_tests.cohorts.conftest import (
    audit_rows,
    materialize,
    privacy,
    restore,
    seed_events,
    ts,
)


def test_each_step_writes_start_and_end_rows_with_the_run_id(warehouse, local_mixpanel, local_slack):
    seed_events(
        warehouse,
        [privacy("tmp-a", ts("2024-06-05T09:00:00"), "d-a"), restore("real-a", ts("2024-06-05T09:00:40"), "d-a")],
    )
    first = materialize(warehouse, local_mixpanel, local_slack, as_of="2024-06-06T00:00:00Z")
    second = materialize(warehouse, local_mixpanel, local_slack, as_of="2024-06-06T00:00:00Z")

    for result in (first, second):
        rows = audit_rows(warehouse, result.run_id)
        assert set(rows["process_name"]) == {PROCESS_NAME}
        assert list(zip(rows["step"], rows["status"])) == [
            ("start_step_1", "started"),
            ("end_step_1", "success"),
            ("start_step_2", "started"),
            ("end_step_2", "success"),
        ]
        assert rows["logged_at"].is_monotonic_increasing
    by_step = {r["step"]: r["details"] for _, r in audit_rows(warehouse, first.run_id).iterrows()}
    assert by_step["start_step_1"]["as_of"] == "2024-06-06T00:00:00Z"
    assert by_step["start_step_1"]["lookback_days"] == 2
    assert by_step["end_step_1"]["inserted"] == 1
    assert by_step["end_step_2"]["users_marked"] == 1
    again = {r["step"]: r["details"] for _, r in audit_rows(warehouse, second.run_id).iterrows()}
    assert again["end_step_1"]["inserted"] == 0
    assert again["end_step_2"]["users_marked"] == 0
    assert len(audit_rows(warehouse)) == 8


def test_a_failing_step_is_logged_failed(duckdb_warehouse, local_mixpanel, local_slack):
    # no events table yet: detection fails with a message that says what to do
    result = materialize(
        duckdb_warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], raise_on_error=False
    )
    assert not result.success
    rows = audit_rows(duckdb_warehouse, result.run_id)
    assert list(zip(rows["step"], rows["status"])) == [("start_step_1", "started"), ("end_step_1", "failed")]
    error = rows.iloc[-1]["details"]["error"]
    assert "mixpanel_data.mixpanel_events" in error and "materialize" in error


def test_invalid_lookback_fails_fast(duckdb_warehouse, local_mixpanel, local_slack):
    result = materialize(
        duckdb_warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], lookback_days=0, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("peerplay__state_loss_temp_users")
    assert "lookback_days" in str(failure.error)


class _AuditOnly(CohortStore):
    """A CohortStore whose audit rows go to a list (``fail_on``: steps whose write fails)."""

    def __init__(self, fail_on=()):
        self.rows, self.fail_on = [], set(fail_on)

    def audit(self, run_id, step, status, details=None, logged_at=None):
        if step in self.fail_on:
            raise RuntimeError(f"cannot write {step}")
        self.rows.append((step, status, details))


def test_audited_run_writes_start_and_end_rows_once():
    store = _AuditOnly()
    with store.audited_run("r", "step_9", {"a": 1}) as audited:
        audited.status, audited.details = "partial", {"a": 1, "n": 2}
    assert store.rows == [("start_step_9", "started", {"a": 1}), ("end_step_9", "partial", {"a": 1, "n": 2})]


def test_audited_run_records_a_failure_and_reraises_it():
    store = _AuditOnly()
    with pytest.raises(ValueError, match="boom"):
        with store.audited_run("r", "step_9", {"a": 1}, failure_details={"synced": 0}) as audited:
            audited.failure_details["synced"] = 5
            raise ValueError("boom")
    assert store.rows[-1] == ("end_step_9", "failed", {"synced": 5, "error": "ValueError: boom"})


def test_audited_run_failure_row_that_cannot_be_written_does_not_mask_the_error():
    store = _AuditOnly(fail_on={"end_step_9"})
    warnings = []

    class Log:
        def warning(self, message):
            warnings.append(message)

    with pytest.raises(ValueError, match="boom"):
        with store.audited_run("r", "step_9", {"a": 1}, log=Log()):
            raise ValueError("boom")
    assert store.rows == [("start_step_9", "started", {"a": 1})]
    assert warnings and "end_step_9" in warnings[0]
