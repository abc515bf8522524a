"""Run-failure Slack alert (issue 2, acceptance 6): one message per failed run, no secret."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from analytics_platform.ops.alerts import scrub, summarize_error
from analytics_platform.ops.definitions import defs as ops_defs
from analytics_platform.ops.sensors import run_failure_slack_alert
from analytics_platform.resources.slack import SlackResource

SECRET = "mp-api-secret-3f9a1c77"
WEBSERVER = "http://dagster.example.test:3000"


@dg.asset(key=["demo", "always_fails"])
def always_fails() -> None:
    raise RuntimeError(f"Mixpanel refused the secret {SECRET}\nsecond line\nthird line\nfourth line")


@dg.asset(key=["demo", "always_works"])
def always_works() -> int:
    return 1


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("MIXPANEL_API_SECRET", SECRET)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", WEBSERVER)


def _tick(instance, slack: SlackResource, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"slack": slack})
    return run_failure_slack_alert.evaluate_tick(context)


def test_one_message_per_failed_run_with_link_and_no_secret(env, slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs(), default_channel="#data-alerts")
    with dg.instance_for_test() as instance:
        first = _tick(instance, slack)  # the first tick only sets the cursor
        assert first.cursor and slack_stub.messages == []

        ok = dg.materialize([always_works], instance=instance)
        failed = dg.materialize([always_fails], instance=instance, raise_on_error=False)
        assert ok.success and not failed.success
        run_id = failed.dagster_run.run_id

        second = _tick(instance, slack, first.cursor)
        third = _tick(instance, slack, second.cursor)

    assert second.cursor != first.cursor and third.cursor == second.cursor
    assert len(slack_stub.messages) == 1  # the successful run and the re-evaluation send nothing
    (message,) = slack_stub.messages
    assert message["channel"] == "#data-alerts"
    everything = json.dumps(message)
    assert f"{WEBSERVER}/runs/{run_id}" in message["text"]
    assert f"{WEBSERVER}/runs/{run_id}" in everything.replace("\\/", "/")
    assert "demo__always_fails" in message["text"]  # the failed step
    assert "demo/always_fails" in message["text"]  # its asset
    assert "Mixpanel refused the secret" in message["text"]
    assert "fourth line" not in message["text"]  # summary: first lines only
    assert SECRET not in everything


def test_direct_invocation_builds_the_same_alert(env, slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs())
    with dg.instance_for_test() as instance:
        failed = dg.materialize([always_fails], instance=instance, raise_on_error=False)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_slack_alert",
            dagster_event=failed.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=failed.dagster_run,
            resources={"slack": slack},
        ).for_run_failure()
        run_failure_slack_alert(context)

    (message,) = slack_stub.messages
    assert failed.dagster_run.run_id in message["text"] and SECRET not in json.dumps(message)


def test_undelivered_alert_fails_the_tick_without_repeating(env, slack_stub):
    slack_stub.outage = True
    slack = SlackResource(**{**slack_stub.resource_kwargs(), "max_retries": 0})
    with dg.instance_for_test() as instance:
        first = _tick(instance, slack)
        dg.materialize([always_fails], instance=instance, raise_on_error=False)
        second = _tick(instance, slack, first.cursor)
        slack_stub.outage = False
        third = _tick(instance, slack, second.cursor)

    (reaction,) = second.dagster_run_reactions
    assert reaction.error is not None and "not delivered" in reaction.error.to_string()
    assert SECRET not in reaction.error.to_string()
    assert slack_stub.messages == [] and not third.dagster_run_reactions


def test_sensor_is_registered_and_needs_the_slack_resource():
    sensor = next(s for s in ops_defs.sensors if s.name == "run_failure_slack_alert")
    assert "slack" in sensor.required_resource_keys
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_scrub_and_summary():
    assert scrub("postgresql://app:hunter22@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert scrub("Authorization: Bearer abcdefgh12345") == "Authorization: Bearer ***"
    assert scrub("token=abc123 password: p4ss") == "token=*** password: ***"
    assert "xoxb-" not in scrub("using xoxb-12345678")
    assert summarize_error("a\n\nb\nc\nd", max_lines=2) == "a\nb\n…"
    assert len(summarize_error("x" * 2000)) == 500


RETRIES_ON = {"run_retries": {"enabled": True, "max_retries": 2}}


def test_a_retried_failure_alerts_once_on_its_final_attempt(env, slack_stub):
    """Run retries on: an attempt Dagster will retry carries dagster/will_retry=true and posts
    nothing; an attempt with no retry left (here: dagster/max_retries=0) posts the message."""
    slack = SlackResource(**slack_stub.resource_kwargs(), default_channel="#data-alerts")
    with dg.instance_for_test(overrides=RETRIES_ON) as instance:
        cursor = _tick(instance, slack).cursor
        first = dg.materialize([always_fails], instance=instance, raise_on_error=False)
        assert instance.get_run_by_id(first.dagster_run.run_id).tags["dagster/will_retry"] == "true"
        cursor = _tick(instance, slack, cursor).cursor
        assert slack_stub.messages == []  # a retry is coming: no alert yet

        final = dg.materialize(
            [always_fails], instance=instance, raise_on_error=False, tags={"dagster/max_retries": "0"}
        )
        assert instance.get_run_by_id(final.dagster_run.run_id).tags["dagster/will_retry"] == "false"
        _tick(instance, slack, cursor)

    assert len(slack_stub.messages) == 1
    assert final.dagster_run.run_id in slack_stub.messages[0]["text"]
