"""Acceptance 5: the detector against the warehouse and the Slack stub."""

from __future__ import annotations

import json

from analytics_platform.resources.slack import SlackResource
from analytics_platform_tests.mixpanel.conftest import (
    ANOMALIES_KEY,
    anomaly_rows,
    burst,
    materialize_anomalies,
    metadata_of,
    seed_events_table,
    ts,
)

NPE = "impression_error_null_pointer_detected"  # threshold 5, 1-minute windows, #alerts-errors
PURCHASE = "purchase_failed"  # threshold 3, 5-minute windows, #alerts


def test_threshold_incomplete_windows_cooldown_and_at_most_once(warehouse, slack_stub, slack):
    seed_events_table(
        warehouse,
        burst(NPE, ts("2024-06-05T10:00:00"), 5)  # = threshold: not an anomaly
        + burst(NPE, ts("2024-06-05T10:01:00"), 6)  # threshold + 1: anomaly
        + burst(NPE, ts("2024-06-05T10:05:00"), 20, spread_seconds=20)  # incomplete at 10:05:30
        + burst(NPE, ts("2024-06-05T10:06:00"), 7),
    )
    first = materialize_anomalies(warehouse, slack, "2024-06-05T10:05:30Z")
    rows = anomaly_rows(warehouse)
    assert [(r["event_name"], r["window_start"].strftime("%H:%M"), r["event_count"], r["alert_status"]) for r in rows.to_dict("records")] == [
        (NPE, "10:01", 6, "sent")
    ]
    messages = slack_stub.messages_in("#alerts-errors")
    assert len(messages) == 1
    blocks = json.dumps(messages[0]["blocks"], ensure_ascii=False)
    assert "*Count*\\n6" in blocks and "*Threshold*\\n5" in blocks and "10:01–10:02 UTC" in blocks
    meta = metadata_of(first, ANOMALIES_KEY)
    assert (meta["new_anomalies"], meta["alerts_sent"], meta["alerts_pending"]) == (1, 1, 0)
    samples = json.loads(rows["sample_json"].iloc[0])
    assert 1 <= len(samples) <= 3 and {"distinct_id", "time", "properties"} <= set(samples[0])

    # the same run again: nothing new is recorded or sent
    again = materialize_anomalies(warehouse, slack, "2024-06-05T10:05:30Z")
    assert len(slack_stub.messages) == 1
    assert metadata_of(again, ANOMALIES_KEY)["new_anomalies"] == 0
    assert len(anomaly_rows(warehouse)) == 1

    # 10:05 is complete now: anomalous, but 4 minutes after the alerted 10:01 -> suppressed
    materialize_anomalies(warehouse, slack, "2024-06-05T10:06:30Z")
    # 10:06 starts exactly 5 minutes after 10:01 -> alerted
    materialize_anomalies(warehouse, slack, "2024-06-05T10:07:00Z")
    rows = anomaly_rows(warehouse)
    got = {r["window_start"].strftime("%H:%M"): r["alert_status"] for r in rows.to_dict("records")}
    assert got == {"10:01": "sent", "10:05": "suppressed", "10:06": "sent"}
    assert len(slack_stub.messages_in("#alerts-errors")) == 2


def test_alerts_reach_the_configured_channel(duckdb_warehouse, slack_stub, slack):
    seed_events_table(duckdb_warehouse, burst(PURCHASE, ts("2024-06-05T10:00:00"), 4, spread_seconds=240))
    materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:05:00Z")
    assert len(slack_stub.messages_in("#alerts")) == 1
    assert slack_stub.messages_in("#alerts-errors") == []
    text = slack_stub.messages_in("#alerts")[0]["text"]
    assert PURCHASE in text and "10:00–10:05 UTC" in text
    row = anomaly_rows(duckdb_warehouse).iloc[0]
    assert (row["channel"], row["window_minutes"], row["threshold"]) == ("#alerts", 5, 3)


def test_slack_outage_leaves_alerts_pending_and_the_next_run_delivers_them_once(duckdb_warehouse, slack_stub, slack):
    seed_events_table(duckdb_warehouse, burst(NPE, ts("2024-06-05T10:01:00"), 9))
    slack_stub.outage = True
    down = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:03:00Z")
    assert down.success
    assert slack_stub.messages == []
    assert list(anomaly_rows(duckdb_warehouse)["alert_status"]) == ["pending"]
    assert metadata_of(down, ANOMALIES_KEY)["alerts_pending"] == 1

    slack_stub.outage = False
    # much later, with a lookback that no longer covers the window: still retried
    back = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T18:00:00Z", lookback_minutes=5)
    assert len(slack_stub.messages_in("#alerts-errors")) == 1
    meta = metadata_of(back, ANOMALIES_KEY)
    assert (meta["pending_retried"], meta["alerts_sent"], meta["alerts_pending"]) == (1, 1, 0)
    row = anomaly_rows(duckdb_warehouse).iloc[0]
    assert row["alert_status"] == "sent" and row["alerted_at"] is not None and row["delivery_attempts"] == 2

    materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T18:05:00Z")
    materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:03:00Z")
    assert len(slack_stub.messages) == 1


def test_slack_429_is_retried_after_retry_after(duckdb_warehouse, slack_stub, slack):
    seed_events_table(duckdb_warehouse, burst(NPE, ts("2024-06-05T10:01:00"), 9))
    slack_stub.fail_next(429, times=1, retry_after=1)
    materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:03:00Z")
    assert len(slack_stub.messages_in("#alerts-errors")) == 1
    assert list(anomaly_rows(duckdb_warehouse)["alert_status"]) == ["sent"]
    assert [r["status"] for r in slack_stub.requests if r["endpoint"] == "api"][:2] == [429, 200]


def test_webhook_delivery(duckdb_warehouse, slack_stub):
    seed_events_table(duckdb_warehouse, burst(NPE, ts("2024-06-05T10:01:00"), 9))
    webhook = SlackResource(**slack_stub.resource_kwargs("webhook"))
    materialize_anomalies(duckdb_warehouse, webhook, "2024-06-05T10:03:00Z")
    assert len(slack_stub.messages) == 1 and slack_stub.messages[0]["via"] == "webhook"
    assert list(anomaly_rows(duckdb_warehouse)["alert_status"]) == ["sent"]


def test_no_events_no_anomalies(duckdb_warehouse, slack_stub, slack):
    seed_events_table(duckdb_warehouse, burst("app_open", ts("2024-06-05T10:01:00"), 100))  # not monitored
    result = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:03:00Z")
    meta = metadata_of(result, ANOMALIES_KEY)
    assert meta["new_anomalies"] == 0 and meta["dagster/row_count"] == 0
    assert meta["windows_examined"] == 60 + 12  # NPE: 60 one-minute windows, purchase_failed: 12 five-minute ones
    assert slack_stub.messages == []


def test_a_permanent_slack_error_fails_the_alert_after_three_attempts_with_one_notice(duckdb_warehouse, slack_stub, slack):
    """Issue 14.7: `channel_not_found` is permanent: the alert stays 'pending' for two
    attempts, is marked 'failed' on the third with one notice to SLACK_DEFAULT_CHANNEL, and
    is never retried again."""
    slack_stub.channels.pop("alerts-errors")  # the configured channel was deleted
    seed_events_table(duckdb_warehouse, burst(NPE, ts("2024-06-05T10:01:00"), 6))
    statuses = []
    for _ in range(4):
        materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:05:30Z")
        (row,) = anomaly_rows(duckdb_warehouse).to_dict("records")
        statuses.append((row["alert_status"], row["delivery_attempts"]))
    assert statuses == [("pending", 1), ("pending", 2), ("failed", 3), ("failed", 3)]
    attempts = [r for r in slack_stub.requests if r.get("channel") == "#alerts-errors"]
    assert len(attempts) == 3
    (notice,) = slack_stub.messages_in("#data-alerts")
    assert NPE in notice["text"] and "channel_not_found" in notice["text"] and "failed" in notice["text"]


def test_each_alert_is_recorded_sent_as_soon_as_slack_accepts_it(duckdb_warehouse, slack_stub, slack, monkeypatch):
    """Issue 14.7: a crash after Slack accepted the first of two alerts (here: the write of
    the second one fails) does not post the first one again on the re-run."""
    from analytics_platform.mixpanel import store

    seed_events_table(
        duckdb_warehouse,
        burst(NPE, ts("2024-06-05T10:01:00"), 6) + burst(PURCHASE, ts("2024-06-05T10:00:00"), 4),
    )
    real_load = store._load_anomalies
    writes = {"sent": 0}

    def crash_on_the_second_sent_record(warehouse, dataset, rows, **kwargs):
        if kwargs.get("mode") == "merge" and rows and rows[0].get("alert_status") == "sent":
            writes["sent"] += 1
            if writes["sent"] == 2:
                raise RuntimeError("process killed")
        return real_load(warehouse, dataset, rows, **kwargs)

    monkeypatch.setattr(store, "_load_anomalies", crash_on_the_second_sent_record)
    crashed = materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:05:30Z", raise_on_error=False)
    assert not crashed.success and len(slack_stub.messages) == 2
    monkeypatch.setattr(store, "_load_anomalies", real_load)
    materialize_anomalies(duckdb_warehouse, slack, "2024-06-05T10:05:30Z")
    assert len(slack_stub.messages) == 3  # only the alert whose 'sent' was not recorded again
    assert set(anomaly_rows(duckdb_warehouse)["alert_status"]) == {"sent"}
