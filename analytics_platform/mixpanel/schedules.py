"""Jobs and schedules of the mixpanel domain (UTC).

* ``mixpanel_events_refresh`` every 15 minutes: the current UTC day, incrementally (the
  00:00 tick: the previous day and the new one, one run over the range);
* ``mixpanel_events_late_sweep`` daily 01:00: the ``MIXPANEL_LATE_DAYS`` previous days,
  ONE run over the range (one export query);
* ``mixpanel_event_anomalies`` every 5 minutes: detection with ``as_of`` = the tick.

No pile-up: the frequent schedules skip a tick while a run of theirs is still queued or
running (checked on the instance), and the run tags below let the run queue cap them
(dagster.yaml ``tag_concurrency_limits``): ``analytics_platform/mixpanel_export`` (every
run that queries the export API) and ``analytics_platform/mixpanel_ingest`` (at most one
ingestion run at a time), ``analytics_platform/mixpanel_detect`` (one detection run).
Ingestion runs also carry ``analytics_platform/trigger`` (``refresh`` / ``late_sweep``: what
their export queries are charged as in the export budget, which keeps the refresh a
reserve) and ``dagster/priority`` (queued ahead of backfill runs).
"""

import datetime as dt
from typing import Optional

import dagster as dg

from analytics_platform.common import UTC, partition_day, utc_now
from analytics_platform.mixpanel.assets import ANOMALIES_KEY, EVENTS_KEY, EVENTS_PARTITIONS
from analytics_platform.settings import get_settings

EXPORT_TAG = "analytics_platform/mixpanel_export"
INGEST_TAG = "analytics_platform/mixpanel_ingest"
DETECT_TAG = "analytics_platform/mixpanel_detect"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The run queue launches higher priorities first: the scheduled refresh and sweep go ahead
# of queued backfill runs (priority 0), as the export budget keeps them a reserve.
PRIORITY_TAG = "dagster/priority"
REFRESH_PRIORITY = "10"
SWEEP_PRIORITY = "5"

INGEST_TAGS = {EXPORT_TAG: "events", INGEST_TAG: "mixpanel_events"}
DETECT_TAGS = {DETECT_TAG: "event_anomalies"}

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

events_refresh_job = dg.define_asset_job(
    "mixpanel_events_refresh",
    selection=dg.AssetSelection.assets(EVENTS_KEY),
    partitions_def=EVENTS_PARTITIONS,
    tags=INGEST_TAGS,
    description="Refresh mixpanel_data/mixpanel_events for a day or a range (one export query per range).",
)

anomalies_job = dg.define_asset_job(
    "mixpanel_event_anomalies",
    selection=dg.AssetSelection.assets(ANOMALIES_KEY),
    tags=DETECT_TAGS,
    description="Detect event spikes and deliver pending Slack alerts.",
)


def _busy(context: dg.ScheduleEvaluationContext, tags: dict[str, str]) -> list[str]:
    """Ids of runs carrying ``tags`` that are queued or running."""
    records = context.instance.get_run_records(
        dg.RunsFilter(tags=tags, statuses=IN_PROGRESS), limit=5
    )
    return [r.dagster_run.run_id for r in records]


def _tick(context: dg.ScheduleEvaluationContext) -> dt.datetime:
    tick = context.scheduled_execution_time or utc_now()
    if tick.tzinfo is None:
        tick = tick.replace(tzinfo=UTC)
    return tick.astimezone(UTC)


REFRESH_INTERVAL = dt.timedelta(minutes=15)


def refresh_request(context: dg.ScheduleEvaluationContext):
    """The current UTC day's partition, unless an ingestion run is still queued/running.

    The first tick of a UTC day (00:00) covers the previous day too, as ONE run over the
    range (one export query): otherwise the events of that day's last 15 minutes would wait
    for the late sweep at 01:00, and detection's lookback would have passed their windows.
    """
    busy = _busy(context, {INGEST_TAG: INGEST_TAGS[INGEST_TAG]})
    if busy:
        return dg.SkipReason(f"an ingestion run is still queued or running ({busy[0]}): skipping this tick")
    tick = _tick(context)
    day = tick.date()
    previous = (tick - REFRESH_INTERVAL).date()
    tags = {**INGEST_TAGS, "analytics_platform/trigger": "refresh", PRIORITY_TAG: REFRESH_PRIORITY}
    if previous < day and previous >= partition_day(get_settings().analytics_start_date):
        return dg.RunRequest(
            run_key=f"refresh-{tick:%Y-%m-%dT%H:%M}",
            tags={**tags, RANGE_START_TAG: previous.isoformat(), RANGE_END_TAG: day.isoformat()},
        )
    return dg.RunRequest(run_key=f"refresh-{tick:%Y-%m-%dT%H:%M}", partition_key=day.isoformat(), tags=tags)


def late_sweep_request(context: dg.ScheduleEvaluationContext, late_days: Optional[int] = None):
    """One run over the previous ``MIXPANEL_LATE_DAYS`` days (queued behind any ingestion run)."""
    days = get_settings().mixpanel_late_days if late_days is None else late_days
    if days <= 0:
        return dg.SkipReason("MIXPANEL_LATE_DAYS is 0: no late-data sweep")
    today = _tick(context).date()
    first = today - dt.timedelta(days=days)
    last = today - dt.timedelta(days=1)
    start = partition_day(get_settings().analytics_start_date)
    first = max(first, start)
    if last < first:
        return dg.SkipReason("no complete day after ANALYTICS_START_DATE to sweep yet")
    return dg.RunRequest(
        run_key=f"late-sweep-{today.isoformat()}",
        tags={
            **INGEST_TAGS,
            "analytics_platform/trigger": "late_sweep",
            PRIORITY_TAG: SWEEP_PRIORITY,
            RANGE_START_TAG: first.isoformat(),
            RANGE_END_TAG: last.isoformat(),
        },
    )


def detect_request(context: dg.ScheduleEvaluationContext):
    """Detection as of the tick, unless the previous detection is still queued/running."""
    busy = _busy(context, DETECT_TAGS)
    if busy:
        return dg.SkipReason(f"a detection run is still queued or running ({busy[0]}): skipping this tick")
    tick = _tick(context)
    return dg.RunRequest(
        run_key=f"detect-{tick:%Y-%m-%dT%H:%M}",
        run_config={"ops": {"mixpanel_data__event_anomalies": {"config": {"as_of": tick.isoformat()}}}},
        tags=DETECT_TAGS,
    )


@dg.schedule(
    name="mixpanel_events_every_15_minutes",
    cron_schedule="*/15 * * * *",
    job=events_refresh_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh today's mixpanel_events partition (incremental: only new event_ids are written).",
)
def events_every_15_minutes(context: dg.ScheduleEvaluationContext):
    return refresh_request(context)


@dg.schedule(
    name="mixpanel_events_late_sweep",
    cron_schedule="0 1 * * *",
    job=events_refresh_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-fetch the MIXPANEL_LATE_DAYS previous days (one run, one export query) for late events.",
)
def events_late_sweep(context: dg.ScheduleEvaluationContext):
    return late_sweep_request(context)


@dg.schedule(
    name="mixpanel_event_anomalies_every_5_minutes",
    cron_schedule="*/5 * * * *",
    job=anomalies_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Detect event spikes as of the tick and deliver pending alerts.",
)
def anomalies_every_5_minutes(context: dg.ScheduleEvaluationContext):
    return detect_request(context)


JOBS = [events_refresh_job, anomalies_job]
SCHEDULES = [events_every_15_minutes, events_late_sweep, anomalies_every_5_minutes]
