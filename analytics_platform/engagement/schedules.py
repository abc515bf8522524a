"""The daily engagement job: signals and milestones for the day that just ended (partition
D = yesterday, as of D + 1 day 00:00 UTC) and, again, for the ``LATE_DAYS`` days before it,
so events uploaded late (offline clients) reach the stored signals (as posthog's sessions
re-load their last days). The signals asset reads Firestore itself (the first run of a tick
does; the others reuse that read, see ``mirror_max_age_minutes``)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from analytics_platform.common import UTC
from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY, SIGNALS_OP

engagement_daily_job = dg.define_asset_job(
    "engagement_daily_job",
    selection=dg.AssetSelection.assets(SIGNALS_KEY, MILESTONES_KEY),
    description=(
        "user_engagement_signals (bringing the Firestore mirror up to the partition's end first) and "
        "user_milestones for one daily partition (with their checks)."
    ),
    # dagster.yaml limits runs with this tag to one at a time: the extraction cursor is shared.
    tags={"domain": "engagement", "analytics_platform/firestore_extract": "true"},
)

DAILY_CRON = "30 1 * * *"
# Days re-evaluated after the newest one: the default re-read window (72 h) in days.
LATE_DAYS = 3
# The runs of one tick share one Firestore read: a complete read younger than this is reused.
TICK_MIRROR_MAX_AGE_MINUTES = 180


def partition_for(scheduled: dt.datetime) -> str:
    """The newest partition a run scheduled at ``scheduled`` computes: the previous UTC day."""
    scheduled = scheduled.astimezone(UTC)
    return (scheduled.date() - dt.timedelta(days=1)).isoformat()


def partitions_for(scheduled: dt.datetime, late_days: int = LATE_DAYS) -> list[str]:
    """The partitions of a tick at ``scheduled``: yesterday, then the ``late_days`` days before."""
    newest = dt.date.fromisoformat(partition_for(scheduled))
    return [(newest - dt.timedelta(days=k)).isoformat() for k in range(late_days + 1)]


def daily_run_requests(scheduled: dt.datetime, first_partition: str) -> list[dg.RunRequest]:
    """One run per partition of the tick (newest first), clipped to the partitions that exist;
    run keys name the tick and the partition, so a tick never runs twice and a day is
    re-evaluated on each of the next ``LATE_DAYS`` ticks."""
    tick = scheduled.astimezone(UTC).date().isoformat()
    config = {"ops": {SIGNALS_OP: {"config": {"mirror_max_age_minutes": TICK_MIRROR_MAX_AGE_MINUTES}}}}
    return [
        dg.RunRequest(run_key=f"engagement_daily:{tick}:{p}", partition_key=p, run_config=config)
        for p in partitions_for(scheduled)
        if p >= first_partition
    ]


@dg.schedule(
    name="engagement_daily",
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    job=engagement_daily_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily at 01:30 UTC: signals and milestones as of the end of yesterday (UTC), and again for the "
        f"{LATE_DAYS} days before it (late uploads)."
    ),
)
def engagement_daily(context: dg.ScheduleEvaluationContext):
    from analytics_platform.engagement.assets import PARTITIONS

    first = PARTITIONS.start.strftime("%Y-%m-%d")
    return daily_run_requests(context.scheduled_execution_time, first)
