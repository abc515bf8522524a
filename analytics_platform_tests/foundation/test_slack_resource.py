"""SlackResource over real HTTP against the Slack stub (issue 2, acceptance 5)."""

from __future__ import annotations

import json
import logging
import time

import dagster as dg
import pytest

from analytics_platform.resources.local.slack_outbox import LocalSlack
from analytics_platform.resources.slack import SlackResource
from analytics_platform.settings import SettingsError

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*anomaly* 12 > 5"}}]


def _logs(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_bot_token_posts_to_the_requested_channel(slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs())

    delivery = slack.post_message("12 events > 5", blocks=BLOCKS, channel="#alerts-errors")

    assert delivery.delivered and delivery.destination == "#alerts-errors" and delivery.ts
    (message,) = slack_stub.messages
    assert message["channel"] == "#alerts-errors" and message["via"] == "bot"
    assert message["text"] == "12 events > 5" and message["blocks"] == BLOCKS


def test_bot_token_defaults_to_the_default_channel(slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs(), default_channel="#alerts")
    assert slack.post_message("hello").destination == "#alerts"
    assert len(slack_stub.messages_in("#alerts")) == 1


def test_unknown_channel_is_not_delivered(slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs())
    delivery = slack.post_message("hello", channel="#does-not-exist")
    assert not delivery.delivered and delivery.error == "channel_not_found"


def test_invalid_token_is_not_delivered_and_not_logged(slack_stub, caplog):
    slack = SlackResource(**{**slack_stub.resource_kwargs(), "bot_token": "xoxb-wrong-77"})
    with caplog.at_level(logging.DEBUG):
        delivery = slack.post_message("hello")
    assert not delivery.delivered and delivery.error == "invalid_auth"
    assert "xoxb-wrong-77" not in _logs(caplog)


def test_webhook_posts(slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs("webhook"))

    delivery = slack.post_message("via webhook", blocks=BLOCKS, channel="#ignored-by-webhooks")

    assert delivery.delivered and delivery.destination == "webhook"
    (message,) = slack_stub.messages
    assert message["via"] == "webhook" and message["text"] == "via webhook" and message["blocks"] == BLOCKS


@pytest.mark.parametrize("mode", ["bot", "webhook"])
def test_429_is_retried_after_retry_after(slack_stub, mode):
    slack_stub.fail_next(429, retry_after=1, endpoint="api" if mode == "bot" else "webhook")
    slack = SlackResource(**slack_stub.resource_kwargs(mode))

    started = time.monotonic()
    delivery = slack.post_message("rate limited once")

    assert delivery.delivered
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in slack_stub.requests] == [429, 200]
    assert len(slack_stub.messages) == 1


def test_server_error_is_retried(slack_stub):
    slack_stub.fail_next(500, times=2)
    slack = SlackResource(**slack_stub.resource_kwargs())
    assert slack.post_message("after two 500s").delivered
    assert [r["status"] for r in slack_stub.requests] == [500, 500, 200]


@pytest.mark.parametrize("mode", ["bot", "webhook"])
def test_outage_is_reported_not_raised_and_leaks_nothing(slack_stub, caplog, mode):
    slack_stub.outage = True
    slack = SlackResource(**slack_stub.resource_kwargs(mode))

    with caplog.at_level(logging.DEBUG):
        delivery = slack.post_message("during the outage")

    assert not delivery.delivered and "503" in delivery.error
    assert len(slack_stub.requests) == 1 + slack.max_retries
    secret_path = slack_stub.webhook_path.split("/services/")[1]
    for text in (delivery.error, _logs(caplog)):
        assert slack_stub.bot_token not in text and secret_path not in text


@pytest.mark.parametrize("mode", ["bot", "webhook"])
def test_unreachable_server_is_reported_not_raised(slack_stub, caplog, mode):
    kwargs = slack_stub.resource_kwargs(mode)
    slack_stub.stop()
    slack = SlackResource(**{**kwargs, "max_retries": 1})
    with caplog.at_level(logging.DEBUG):
        delivery = slack.post_message("nobody listens")
    assert not delivery.delivered and delivery.error
    logs = _logs(caplog)
    assert "retry" in logs.lower()  # slack_sdk logged its retry (through the redacting logger)
    assert slack_stub.webhook_path.split("/services/")[1] not in logs + delivery.error


def test_outbox_when_unconfigured(tmp_path, caplog):
    outbox = tmp_path / "outbox" / "slack_alerts.jsonl"
    slack = LocalSlack(outbox_path=str(outbox))

    with caplog.at_level(logging.INFO):
        first = slack.post_message("first alert\nwith details", blocks=BLOCKS, channel="#alerts-errors")
        second = slack.post_message("second alert")

    assert first.delivered and first.destination == "outbox" and second.destination == "outbox"
    rows = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert [(r["channel"], r["text"]) for r in rows] == [
        ("#alerts-errors", "first alert\nwith details"),
        ("#data-alerts", "second alert"),
    ]
    assert rows[0]["blocks"] == BLOCKS
    assert "first alert" in _logs(caplog)


def test_secrets_from_the_environment_never_leave(slack_stub, monkeypatch):
    monkeypatch.setenv("MIXPANEL_API_SECRET", "mp-secret-should-not-leak")
    slack = SlackResource(**slack_stub.resource_kwargs())
    slack.post_message("failed with mp-secret-should-not-leak", blocks=[
        {"type": "section", "text": {"type": "mrkdwn", "text": "mp-secret-should-not-leak"}}
    ])
    (message,) = slack_stub.messages
    assert "mp-secret-should-not-leak" not in json.dumps(message)


def test_the_real_client_requires_a_token_or_webhook():
    with pytest.raises(Exception) as raised:
        with dg.build_resources({"slack": SlackResource()}):
            pass
    text = str(raised.value) + str(raised.value.__cause__)
    assert "SLACK_BOT_TOKEN" in text and "SLACK_WEBHOOK_URL" in text


def test_api_url_must_end_with_api_slash():
    with pytest.raises(SettingsError, match="SLACK_API_URL"):
        SlackResource(bot_token="xoxb-1", api_url="http://127.0.0.1:9/api").post_message("x")
