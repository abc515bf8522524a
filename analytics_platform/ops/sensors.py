"""Run-failure alert: one Slack message per failed run of any job in this code location;
freshness alert: one message per freshness episode (stale, then fresh again).

Dagster's run status sensors keep a cursor (the last run-failure event they processed), so
each failed run is reported once, also across daemon restarts.  The very first tick only
initialises the cursor (runs that failed before the sensor ever ran are not reported).

With run retries on (dagster.yaml ``run_retries``), a failed run that Dagster will retry
carries ``dagster/will_retry=true``: only the final attempt is reported, so one failure is
one message, not one per attempt.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from analytics_platform.common import UTC
from analytics_platform.ops.alerts import (
    EpisodeState,
    RunFailure,
    advance_episode,
    after_delivery,
    format_freshness_message,
    format_run_failure,
    scrub,
    summarize_error,
)
from analytics_platform.ops.freshness import FRESHNESS_CHECK_KEYS, has_been_fresh
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


# ----------------------------------------------------------------------------- freshness
FRESHNESS_CURSOR_VERSION = 1


def _load_episodes(cursor: str | None) -> dict[str, EpisodeState]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except ValueError:
        return {}
    if not isinstance(data, dict) or data.get("v") != FRESHNESS_CURSOR_VERSION:
        return {}
    return {k: EpisodeState.from_dict(v) for k, v in (data.get("checks") or {}).items()}


def _dump_episodes(episodes: dict[str, EpisodeState]) -> str:
    return json.dumps({"v": FRESHNESS_CURSOR_VERSION, "checks": {k: s.to_dict() for k, s in sorted(episodes.items())}})


def _latest_completed(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]):
    summaries = instance.event_log_storage.get_asset_check_summary_records(keys)
    return {key: getattr(summaries.get(key), "last_completed_check_execution_record", None) for key in keys}


def asset_url(webserver_url: str, key: dg.AssetKey) -> str:
    return f"{webserver_url.rstrip('/')}/assets/{'/'.join(key.path)}?view=checks"


@dg.sensor(
    name="freshness_slack_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one Slack message when an asset that has been fresh on this instance "
    "goes stale (its freshness check fails) and one when it is fresh again; never-fresh "
    "assets (WARN) post nothing.",
)
def freshness_slack_alert(context: dg.SensorEvaluationContext, slack: SlackService) -> dg.SkipReason:
    """Read the latest evaluation of every freshness check, advance each check's episode
    (kept in the cursor) and deliver the messages the transitions call for.  A message that
    is not delivered stays pending in the cursor and is retried on the next ticks (given up
    after a few permanent errors), so one episode is one message."""
    episodes = _load_episodes(context.cursor)
    webserver = get_settings().dagster_webserver_url
    sent, changed = [], []
    for key, record in _latest_completed(context.instance, FRESHNESS_CHECK_KEYS).items():
        name = key.to_user_string()
        state = episodes.get(name, EpisodeState())
        evaluation = record.event.asset_check_evaluation if record is not None and record.event else None
        if evaluation is not None and record.id > state.last_record_id:
            before = state.status
            state = advance_episode(
                state,
                record.id,
                passed=evaluation.passed,
                has_been_fresh=has_been_fresh(evaluation),
                at=dt.datetime.fromtimestamp(record.event.timestamp, tz=UTC).isoformat(),
                description=evaluation.description or "",
            )
            if state.status != before:
                changed.append(f"{name}: {before} -> {state.status}")
        if state.pending:
            text, blocks = format_freshness_message(key.asset_key.to_user_string(), state, asset_url(webserver, key.asset_key))
            delivery = slack.post_message(text, blocks=blocks)
            kind = state.pending
            state, gave_up = after_delivery(state, delivery.delivered, getattr(delivery, "permanent", False))
            if delivery.delivered:
                sent.append(f"{kind} {name}")
                context.log.info(f"Freshness alert ({kind}) for {name} sent to {delivery.destination}")
            elif gave_up:
                context.log.error(f"Freshness alert ({kind}) for {name} given up: {delivery.error}")
            else:
                context.log.warning(f"Freshness alert ({kind}) for {name} not delivered, retried next tick: {delivery.error}")
        episodes[name] = state
    context.update_cursor(_dump_episodes(episodes))
    if sent:
        return dg.SkipReason(f"sent: {', '.join(sent)}")
    return dg.SkipReason(
        f"no freshness transition to announce ({'; '.join(changed) if changed else 'no new evaluation'})"
    )
