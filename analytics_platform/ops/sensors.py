"""Run-failure alert: one Slack message per failed run of any job in this code location.

Dagster's run status sensors keep a cursor (the last run-failure event they processed), so
each failed run is reported once, also across daemon restarts.  The very first tick only
initialises the cursor (runs that failed before the sensor ever ran are not reported).

With run retries on (dagster.yaml ``run_retries``), a failed run that Dagster will retry
carries ``dagster/will_retry=true``: only the final attempt is reported, so one failure is
one message, not one per attempt.
"""

from __future__ import annotations

import dagster as dg

from analytics_platform.ops.alerts import RunFailure, format_run_failure, scrub, summarize_error
from analytics_platform.resources.slack import SlackService
from analytics_platform.settings import get_settings, redact


def _root_message(error) -> str:
    """The innermost cause's message: the user's exception, not Dagster's wrapper."""
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    return getattr(error, "message", "") or ""


def describe_failure(context: dg.RunFailureSensorContext, webserver_url: str) -> RunFailure:
    """Collect job, failed steps (+ their assets), a redacted error summary and the run link."""
    run = context.dagster_run
    step_events = context.get_step_failure_events()
    step_keys = list(dict.fromkeys(e.step_key for e in step_events if e.step_key))

    planned = context.instance.get_records_for_run(
        run_id=run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    asset_keys = list(
        dict.fromkeys(
            r.event_log_entry.dagster_event.asset_key.to_user_string()
            for r in planned
            if r.event_log_entry.dagster_event
            and r.event_log_entry.dagster_event.asset_key
            and r.event_log_entry.dagster_event.step_key in step_keys
        )
    )

    if step_events:
        raw = _root_message(step_events[0].event_specific_data.error)
    else:
        data = context.failure_event.event_specific_data
        raw = _root_message(getattr(data, "error", None)) or context.failure_event.message or ""
    error = scrub(redact(summarize_error(raw)))
    return RunFailure(
        job_name=run.job_name,
        run_id=run.run_id,
        run_url=f"{webserver_url.rstrip('/')}/runs/{run.run_id}",
        error=error,
        step_keys=step_keys,
        asset_keys=asset_keys,
        partition=run.tags.get("dagster/partition"),
    )


WILL_RETRY_TAG = "dagster/will_retry"


def will_be_retried(context: dg.RunFailureSensorContext) -> bool:
    """True when Dagster's run retries will start another attempt of the failed run (the
    tag is written right after the failure event, so the run is read afresh)."""
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    return run.tags.get(WILL_RETRY_TAG, "false").lower() == "true"


@dg.run_failure_sensor(
    name="run_failure_slack_alert",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Posts one Slack message per failed run (job, failed steps, error, run link) "
    "to SLACK_DEFAULT_CHANNEL.",
)
def run_failure_slack_alert(context: dg.RunFailureSensorContext, slack: SlackService) -> None:
    """Post the failure of ``context.dagster_run`` to the Slack default channel, unless
    Dagster will retry the run (then its final attempt is the one reported)."""
    if will_be_retried(context):
        context.log.info(f"Run {context.dagster_run.run_id} failed and will be retried: no alert yet")
        return
    failure = describe_failure(context, get_settings().dagster_webserver_url)
    text, blocks = format_run_failure(failure)
    delivery = slack.post_message(text, blocks=blocks)
    if not delivery.delivered:
        # The cursor still moves on (no duplicate later); the failed tick shows in the UI.
        raise RuntimeError(
            f"Run-failure alert for run {failure.run_id} not delivered to Slack: {delivery.error}"
        )
    context.log.info(f"Run-failure alert for run {failure.run_id} sent to {delivery.destination}")
