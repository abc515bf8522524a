"""Acceptance 2: Slack is down (every request answers 503) for whole runs.  Ingestion and
detection still succeed, the alerts stay 'pending' in ``event_anomalies`` and are delivered
exactly once each when Slack is back — whatever the number of runs in between."""

from __future__ import annotations

import datetime as dt

import pytest

from analytics_platform.resources.slack import SlackResource
from analytics_platform_tests.mixpanel.conftest import (
    anomaly_rows,
    materialize_anomalies,
    materialize_events,
    mp_event,
    ts,
)
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform_tests.reliability.helpers import event_rows, metadata

DAY = "2024-06-05"
NPE = "impression_error_null_pointer_detected"  # threshold 5 per 1-minute window -> #alerts-errors
PURCHASE = "purchase_failed"  # threshold 3 per 5-minute window -> #alerts
DETECT = "mixpanel_data__event_anomalies"


def _burst(name: str, start: str, count: int, seconds: int, tag: str) -> list[dict]:
    at = ts(start)
    return [
        mp_event(name, at + dt.timedelta(seconds=i * seconds / count), f"user-{i}", f"{tag}-{i}")
        for i in range(count)
    ]


def _api_requests(stub) -> int:
    return len([r for r in stub.requests if r["endpoint"] in ("api", "webhook")])


@pytest.mark.parametrize("mode", ["bot", "webhook"])
def test_slack_down_for_whole_runs_then_back_delivers_each_alert_once(duckdb_warehouse, mixpanel_stub, slack_stub, mode):
    mixpanel = MixpanelResource(**mixpanel_stub.resource_kwargs())
    slack = SlackResource(**{**slack_stub.resource_kwargs(mode), "max_retries": 1})
    mixpanel_stub.add_events(DAY, _burst(NPE, "2024-06-05T10:01:00", 9, 50, "npe1"))
    mixpanel_stub.add_events(DAY, _burst(PURCHASE, "2024-06-05T10:05:00", 5, 200, "pf1"))
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts("2024-06-05T10:02:00"), "u0", "open-1")])

    slack_stub.outage = True
    ingest = materialize_events(duckdb_warehouse, mixpanel, DAY)
    assert ingest.success and len(event_rows(duckdb_warehouse, DAY)) == 15

    first = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:15:00Z")
    assert first.success
    meta = metadata(first, DETECT)
    assert (meta["new_anomalies"], meta["alerts_sent"], meta["alerts_pending"]) == (2, 0, 2)
    assert slack_stub.messages == []
    # each undelivered alert cost a bounded number of requests (1 + max_retries)
    assert _api_requests(slack_stub) == 2 * (1 + slack.max_retries)

    # still down for the next run (same lookback): nothing duplicated, still pending
    second = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:20:00Z")
    assert second.success
    assert metadata(second, DETECT)["pending_retried"] == 2
    rows = anomaly_rows(duckdb_warehouse)
    assert list(rows["alert_status"]) == ["pending", "pending"]
    assert list(rows["delivery_attempts"]) == [2, 2]

    # a new spike arrives and is ingested and detected while Slack is still down
    mixpanel_stub.add_events(DAY, _burst(NPE, "2024-06-05T10:30:00", 7, 40, "npe2"))
    assert materialize_events(duckdb_warehouse, mixpanel, DAY).success
    third = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:35:00Z")
    assert third.success and metadata(third, DETECT)["alerts_pending"] == 3
    assert slack_stub.messages == []

    # Slack is back: one run delivers all three, once each, however old they are
    slack_stub.outage = False
    back = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T12:00:00Z", lookback_minutes=5)
    meta = metadata(back, DETECT)
    assert (meta["alerts_sent"], meta["alerts_pending"], meta["pending_retried"]) == (3, 0, 3)
    for as_of in ("2024-06-05T12:05:00Z", "2024-06-05T10:35:00Z", "2024-06-05T10:15:00Z"):
        assert materialize_anomalies(duckdb_warehouse, slack, as_of).success  # re-runs: nothing new
    rows = anomaly_rows(duckdb_warehouse)
    assert list(rows["alert_status"]) == ["sent"] * 3
    assert len(slack_stub.messages) == 3
    texts = sorted(m["text"] for m in slack_stub.messages)
    assert len(set(texts)) == 3
    assert sum(NPE in t for t in texts) == 2 and sum(PURCHASE in t for t in texts) == 1
    if mode == "bot":
        assert len(slack_stub.messages_in("#alerts-errors")) == 2
        assert len(slack_stub.messages_in("#alerts")) == 1
    else:  # a webhook posts to its own channel
        assert {m["via"] for m in slack_stub.messages} == {"webhook"}
