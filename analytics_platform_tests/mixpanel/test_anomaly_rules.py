"""Pure rules of the detector: windows, lookback, cooldown walk, Slack message limits."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from analytics_platform.common import UTC
from analytics_platform.mixpanel import rules as A
from analytics_platform.mixpanel.store import rows_sql


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_windows_are_epoch_aligned_tumbling_windows():
    assert A.window_start_of(t("2024-06-05T10:07:59.999"), 5) == t("2024-06-05T10:05:00")
    assert A.window_start_of(t("2024-06-05T10:10:00"), 5) == t("2024-06-05T10:10:00")
    # 7-minute windows are aligned to epoch multiples of 7 minutes, not to the hour
    start = A.window_start_of(t("2024-06-05T10:00:00"), 7)
    assert (start - dt.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() % 420 == 0
    assert start <= t("2024-06-05T10:00:00") < start + dt.timedelta(minutes=7)


def test_examined_windows_are_complete_and_within_the_lookback():
    rng = A.examined_windows(t("2024-06-05T10:00:30"), 1, 60)
    assert rng.end == t("2024-06-05T10:00:00")  # 10:00-10:01 is incomplete: ignored
    starts = rng.starts()
    assert starts[0] == t("2024-06-05T09:00:00")  # ended 09:01 > 09:00:30
    assert starts[-1] == t("2024-06-05T09:59:00")
    assert rng.count == 60
    # a window ending exactly at as_of is complete
    assert A.examined_windows(t("2024-06-05T10:00:00"), 5, 60).end == t("2024-06-05T10:00:00")
    # windows longer than the lookback: the one that ended within it is examined
    rng = A.examined_windows(t("2024-06-05T10:20:00"), 60, 30)
    assert rng.starts() == [t("2024-06-05T09:00:00")]
    assert A.examined_windows(t("2024-06-05T10:20:00"), 60, 10).count == 0
    assert A.examined_windows(t("2024-06-05T10:20:00"), 5, 0).count == 0


def _c(name: str, start: str) -> A.Candidate:
    return A.Candidate(name, t(start), 10)


def test_cooldown_suppresses_then_allows_exactly_c_minutes_later():
    minutes = [f"2024-06-05T10:0{i}:00" for i in range(8)]
    statuses = A.assign_statuses([_c("e", m) for m in minutes], {}, cooldown_minutes=5)
    got = [statuses[("e", t(m))] for m in minutes]
    assert got == [A.ALERT, A.SUPPRESSED, A.SUPPRESSED, A.SUPPRESSED, A.SUPPRESSED, A.ALERT, A.SUPPRESSED, A.SUPPRESSED]


def test_cooldown_state_comes_from_history_and_is_per_event():
    history = {"e": [t("2024-06-05T09:58:00")]}
    statuses = A.assign_statuses(
        [_c("e", "2024-06-05T10:02:00"), _c("e", "2024-06-05T10:03:00"), _c("other", "2024-06-05T10:02:00")],
        history,
        cooldown_minutes=5,
    )
    assert statuses[("e", t("2024-06-05T10:02:00"))] == A.SUPPRESSED  # 4 min after 09:58
    assert statuses[("e", t("2024-06-05T10:03:00"))] == A.ALERT  # exactly 5 min
    assert statuses[("other", t("2024-06-05T10:02:00"))] == A.ALERT
    # suppressed windows do not extend the cooldown; a later alerted one is not "earlier"
    statuses = A.assign_statuses([_c("e", "2024-06-05T09:50:00")], {"e": [t("2024-06-05T09:52:00")]}, 5)
    assert statuses[("e", t("2024-06-05T09:50:00"))] == A.ALERT
    assert A.assign_statuses([_c("e", "2024-06-05T10:00:00"), _c("e", "2024-06-05T10:01:00")], {}, 0) == {
        ("e", t("2024-06-05T10:00:00")): A.ALERT,
        ("e", t("2024-06-05T10:01:00")): A.ALERT,
    }


def test_alert_message_content_and_block_kit_limits():
    huge = {"blob": "x" * 10_000, "nested": {"deep": list(range(2000))}}
    samples = [A.summarise_sample(f"user-{i}", t("2024-06-05T10:00:05"), json.dumps({"$os": "iOS", **huge})) for i in range(10)]
    content = A.AlertContent(
        event_name="impression_error_null_pointer_detected",
        window_start=t("2024-06-05T10:07:00"),
        window_minutes=1,
        event_count=12,
        threshold=5,
        samples=samples,
        link="https://example.test/rows",
        rows_sql=rows_sql("mixpanel_data", "mixpanel_events", "impression_error_null_pointer_detected", t("2024-06-05T10:07:00"), t("2024-06-05T10:08:00")),
    )
    text, blocks = A.build_alert(content)
    assert "12" in text and "5" in text and "10:07–10:08 UTC" in text
    assert len(blocks) <= 50
    for block in blocks:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
    flat = json.dumps(blocks, ensure_ascii=False)
    assert "*Count*\\n12" in flat and "*Threshold*\\n5" in flat
    assert flat.count("user-") == 3  # at most 3 samples
    assert "https://example.test/rows" in flat
    assert "event_timestamp >= '2024-06-05 10:07:00 UTC'" in flat


def test_sample_summary_keeps_a_few_properties():
    sample = A.summarise_sample("u1", t("2024-06-05T10:00:05"), json.dumps({"time": 1, "distinct_id": "u1", "$os": "iOS", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}))
    assert sample["distinct_id"] == "u1"
    assert sample["time"] == "2024-06-05T10:00:05Z"
    assert list(sample["properties"])[0] == "$os"
    assert len(sample["properties"]) == A.SAMPLE_PROPERTIES
    assert "time" not in sample["properties"]


def test_links():
    assert A.warehouse_link(bigquery_project="p1", dataset="d", table="t", webserver_url="http://x").startswith(
        "https://console.cloud.google.com/bigquery?project=p1"
    )
    assert A.warehouse_link(bigquery_project=None, dataset="d", table="t", webserver_url="http://dag:3000/") == "http://dag:3000/assets/d/t"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        A.examined_windows(t("2024-06-05T10:00:00"), 0, 60)
    with pytest.raises(ValueError):
        A.assign_statuses([], {}, -1)


def test_alert_query_writes_the_parameters_in_as_literals_once():
    sql = rows_sql("mixpanel_data", "mixpanel_events", "it's @event_name\n", t("2024-06-05T10:07:00"), t("2024-06-05T10:08:00"))
    assert sql == (
        "SELECT * FROM `mixpanel_data.mixpanel_events` WHERE event_date = '2024-06-05' "
        "AND event_name = 'it\\'s @event_name\\n' "
        "AND event_timestamp >= '2024-06-05 10:07:00 UTC' AND event_timestamp < '2024-06-05 10:08:00 UTC'"
    )
    with pytest.raises(KeyError):
        A.sql_with_literals("SELECT @missing", {})
