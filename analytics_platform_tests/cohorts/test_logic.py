"""Unit tests of the pure rules around the detection (no warehouse, no Dagster)."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from analytics_platform.cohorts import rules as logic

UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))


def test_detection_window_bounds():
    as_of = dt.datetime(2024, 6, 6, 0, 0, tzinfo=UTC)
    window = logic.detection_window(as_of)
    assert window.window_start == dt.datetime(2024, 6, 4, tzinfo=UTC)
    assert window.restore_until == dt.datetime(2024, 6, 6, 0, 2, tzinfo=UTC)
    assert window.params()["max_gap_seconds"] == 120
    assert logic.detection_window(as_of, 7).window_start == dt.datetime(2024, 5, 30, tzinfo=UTC)


def test_detection_window_is_utc_whatever_the_offset():
    window = logic.detection_window(dt.datetime(2024, 6, 6, 2, 0, tzinfo=PLUS2), 1)
    assert window.as_of == dt.datetime(2024, 6, 6, 0, 0, tzinfo=UTC)
    assert window.as_of.utcoffset() == dt.timedelta(0)
    naive = logic.detection_window(dt.datetime(2024, 6, 6), 1)
    assert naive.as_of == dt.datetime(2024, 6, 6, tzinfo=UTC)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_lookback_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="lookback_days"):
        logic.detection_window(dt.datetime(2024, 6, 6, tzinfo=UTC), bad)


def test_yesterday_is_the_utc_day_before_as_of():
    w = logic.yesterday_window(dt.datetime(2024, 6, 6, 0, 0, tzinfo=UTC))
    assert (w.day, w.start, w.end) == (
        dt.date(2024, 6, 5),
        dt.datetime(2024, 6, 5, tzinfo=UTC),
        dt.datetime(2024, 6, 6, tzinfo=UTC),
    )
    # 01:30 at +02:00 is still 2024-06-05 in UTC: yesterday is the 4th
    assert logic.yesterday_window(dt.datetime(2024, 6, 6, 1, 30, tzinfo=PLUS2)).day == dt.date(2024, 6, 4)


def test_iso_utc_and_marker_properties():
    at = dt.datetime(2024, 6, 6, 13, 0, 5, 123456, tzinfo=PLUS2)
    assert logic.iso_utc(at) == "2024-06-06T11:00:05Z"
    assert logic.marker_properties("m_v1", at) == {
        "state_loss_temp_user_cohort_marker": "m_v1",
        "state_loss_last_updated": "2024-06-06T11:00:05Z",
    }
    with pytest.raises(ValueError):
        logic.marker_properties("", at)


def test_chunked():
    assert [len(c) for c in logic.chunked(list(range(4001)), 2000)] == [2000, 2000, 1]
    assert list(logic.chunked([], 2000)) == []


def test_send_in_batches_isolates_failures():
    sent: list[list[dict]] = []
    confirmed: list[list[str]] = []

    def send(updates):
        sent.append(updates)
        index = len(sent)
        if index == 2:
            return SimpleNamespace(ok=False, requests=1, destination="http", error="status 0")
        if index == 3:
            raise ConnectionError("boom")
        return SimpleNamespace(ok=True, requests=2, destination="http", error=None)

    ids = [f"u{i:04d}" for i in range(4500)]
    report = logic.send_in_batches(ids, lambda i: {"$distinct_id": i}, send, batch_size=1500, on_success=confirmed.append)

    assert [len(b) for b in sent] == [1500, 1500, 1500]
    assert report.batches == 3 and report.failed_batches == 2
    assert report.succeeded_ids == ids[:1500]
    assert report.failed_ids == ids[1500:]
    assert confirmed == [ids[:1500]]
    assert report.requests == 3
    assert "ConnectionError: boom" in report.errors[1]


def test_send_in_batches_nothing_to_send_and_limit():
    calls = []
    report = logic.send_in_batches([], lambda i: {}, calls.append)
    assert calls == [] and report.batches == 0
    with pytest.raises(ValueError):
        logic.send_in_batches(["a"], lambda i: {}, calls.append, batch_size=2001)


def test_audit_params_json_details():
    params = logic.audit_params("run-1", "end_step_1", "success", {"as_of": dt.datetime(2024, 6, 6, tzinfo=UTC), "n": 3})
    assert params["process_name"] == "temp_users_cohort"
    assert json.loads(params["details"]) == {"as_of": "2024-06-06T00:00:00Z", "n": 3}
    assert params["logged_at"].tzinfo is not None


def test_summary_message_respects_block_kit_limits():
    users = [logic.ActiveUser(f"user-{i:03d}" * 5, 3, dt.datetime(2024, 6, 5, tzinfo=UTC)) for i in range(100)]
    text, blocks = logic.summary_message(dt.date(2024, 6, 5), users, 1000, table="peerplay.state_loss_temp_users")
    assert "100 of 1000" in text and "remove_active" in text
    assert len(blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    assert "… and 80 more" in blocks[1]["text"]["text"]
    text, _ = logic.summary_message(dt.date(2024, 6, 5), users[:1], 10, table="t", removed=1, remove_active=True)
    assert "1 removed" in text
