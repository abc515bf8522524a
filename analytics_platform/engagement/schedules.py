"""The daily engagement job: extract new Firestore events, then signals and milestones for
the day that just ended (partition D = yesterday, as of D + 1 day 00:00 UTC)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from analytics_platform.common import UTC
from analytics_platform.engagement.assets import EXTRACTED_EVENTS_KEY, MILESTONES_KEY, SIGNALS_KEY

engagement_daily_job = dg.define_asset_job(
    "engagement_daily_job",
    selection=dg.AssetSelection.assets(EXTRACTED_EVENTS_KEY, SIGNALS_KEY, MILESTONES_KEY),
    description=(
        "Incremental Firestore extraction, then user_engagement_signals and user_milestones for "
        "one daily partition (with their checks)."
    ),
    # dagster.yaml limits runs with this tag to one at a time: the extraction cursor is shared.
    tags={"domain": "engagement", "analytics_platform/firestore_extract": "true"},
)

DAILY_CRON = "30 1 * * *"


def partition_for(scheduled: dt.datetime) -> str:
    """The partition a run scheduled at ``scheduled`` computes: the previous UTC day."""
    scheduled = scheduled.astimezone(UTC)
    return (scheduled.date() - dt.timedelta(days=1)).isoformat()


@dg.schedule(
    name="engagement_daily",
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    job=engagement_daily_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 01:30 UTC: extract new events, then signals and milestones as of the end of yesterday (UTC).",
)
def engagement_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    partition = partition_for(context.scheduled_execution_time)
    return dg.RunRequest(run_key=f"engagement_daily:{partition}", partition_key=partition)
