"""Daily run of the session aggregates: the newest complete UTC day plus the 3 days
before it (late events), as ONE run over a partition range, then the person table."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from analytics_platform.common import UTC
from analytics_platform.posthog import rules as logic
from analytics_platform.posthog.assets import PERSONS_KEY, SESSIONS_KEY, SESSIONS_PARTITIONS, SESSIONS_RUN_TAG

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

posthog_daily_job = dg.define_asset_job(
    name="posthog_sessions_daily",
    selection=dg.AssetSelection.assets(SESSIONS_KEY, PERSONS_KEY),
    partitions_def=SESSIONS_PARTITIONS,
    description=(
        "posthog_aggregated/sessions for a day range (one run) followed by "
        "posthog_aggregated/persons."
    ),
    # the run queue runs one of these at a time (dagster.yaml tag_concurrency_limits)
    tags={"domain": "posthog", SESSIONS_RUN_TAG: "sessions"},
)

DAILY_CRON = "30 3 * * *"


def daily_run_request(scheduled_for: dt.datetime, late_days: int = logic.LATE_DAYS) -> dg.RunRequest | dg.SkipReason:
    """The run for a tick at ``scheduled_for``: the last complete UTC day and ``late_days``
    days before it, clipped to the partitions that exist."""
    scheduled_for = scheduled_for.astimezone(UTC)
    keys = set(SESSIONS_PARTITIONS.get_partition_keys(current_time=scheduled_for))
    last_day = scheduled_for.date() - dt.timedelta(days=1)
    first_partition = dt.date.fromisoformat(SESSIONS_PARTITIONS.start.strftime("%Y-%m-%d"))
    days = [d.isoformat() for d in logic.late_window_days(last_day, first_partition, late_days)]
    days = [d for d in days if d in keys]
    if not days:
        return dg.SkipReason(f"No complete day to load at {scheduled_for.isoformat()}.")
    return dg.RunRequest(
        run_key=f"posthog_sessions_{days[0]}_{days[-1]}",
        tags={RANGE_START_TAG: days[0], RANGE_END_TAG: days[-1], "domain": "posthog", SESSIONS_RUN_TAG: "sessions"},
    )


@dg.schedule(
    name="posthog_sessions_daily_schedule",
    cron_schedule=DAILY_CRON,
    job=posthog_daily_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily 03:30 UTC: reload yesterday and the 3 days before it (late events) as one "
        "range run, then rebuild persons."
    ),
)
def posthog_daily_schedule(context: dg.ScheduleEvaluationContext):
    return daily_run_request(context.scheduled_execution_time)
