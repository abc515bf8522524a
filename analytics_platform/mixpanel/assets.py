"""Mixpanel assets: raw events (daily partitions) and event-spike anomalies.

Thin wiring: each asset turns its config and settings into ONE call into :mod:`store`
and returns the result's metadata; the rules are in :mod:`rules`, the SQL in
``sql/mixpanel/``.
"""

import contextlib
from typing import Iterator, Optional

import dagster as dg
from pydantic import Field

from analytics_platform.common import daily_partitions, parse_as_of, partition_keys_of
from analytics_platform.mixpanel import store
from analytics_platform.mixpanel.events_config import EventsConfigError
from analytics_platform.mixpanel.migrate import EventsTableLayoutError
from analytics_platform.resources.mixpanel import MixpanelError, MixpanelService
from analytics_platform.resources.slack import SlackService
from analytics_platform.mixpanel.tables import ANOMALIES_SCHEMA, EVENTS_SCHEMA
from analytics_platform.resources.warehouse import Warehouse, column_schema
from analytics_platform.settings import get_settings

EVENTS_KEY = dg.AssetKey(["mixpanel_data", "mixpanel_events"])
ANOMALIES_KEY = dg.AssetKey(["mixpanel_data", "event_anomalies"])
GROUP = "mixpanel"
OWNERS = ["team:data-platform"]

# Daily UTC partitions from ANALYTICS_START_DATE up to and including the current day.
EVENTS_PARTITIONS = daily_partitions(include_today=True)

# Concurrency pool of every op that calls the Mixpanel export API (set its limit with
# `dagster instance concurrency set mixpanel_export 1`): also covers UI/CLI backfills.
EXPORT_POOL = "mixpanel_export"


def _fail(message: str) -> dg.Failure:
    return dg.Failure(description=message)


@contextlib.contextmanager
def _as_failure() -> Iterator[None]:
    """An invalid events configuration or a Mixpanel export error fails the run with its
    message (already redacted; it names the variable to fix) and no traceback; so does an
    events table of another layout (the message names the differences and the migration
    command)."""
    try:
        yield
    except (EventsConfigError, MixpanelError, EventsTableLayoutError) as exc:
        raise _fail(str(exc)) from None


@dg.asset(
    key=EVENTS_KEY,
    partitions_def=EVENTS_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"mixpanel", "bigquery"},
    owners=OWNERS,
    pool=EXPORT_POOL,
    tags={"domain": "mixpanel"},
    metadata={"dagster/column_schema": column_schema(EVENTS_SCHEMA)},
)
def mixpanel_events(
    context: dg.AssetExecutionContext, warehouse: Warehouse, mixpanel: MixpanelService
) -> dg.MaterializeResult:
    """Raw Mixpanel events, one row per `event_id`, in `{BIGQUERY_DATASET}.{BIGQUERY_TABLE}`.

    Reads the Mixpanel Raw Event Export API (one query per contiguous range of the run's
    partitions; a `--partition-range` backfill is ONE run) for the collected events
    (enabled in `config/events_config.json` / `EVENTS_CONFIG`, plus `impression_privacy`
    and `impression_restore_user_state_by_device_id`).  Writes new rows into the events
    table (partitioned by `event_date`, UTC) and malformed lines into
    `{dataset}.mixpanel_events_rejected`.

    Re-run safety: rows are inserted only when their `event_id` is absent,
    so re-running a day, overlapping fetches and the 15-minute refresh never duplicate a
    row, and rows already loaded keep their `inserted_at`; a rejected line is recorded once
    per (partition_date, line).  Rows of the fetched days whose event is no longer
    collected are deleted, so a partition holds exactly the collected events.
    """
    keys = partition_keys_of(context)
    if not keys:
        raise _fail("mixpanel_data/mixpanel_events is partitioned by UTC day: give --partition or --partition-range")
    with _as_failure():
        result = store.refresh_event_days(
            warehouse=warehouse,
            mixpanel=mixpanel,
            settings=get_settings(),
            partition_keys=keys,
            log=context.log.info,
            warn=context.log.warning,
            run_id=context.run_id,
            trigger=context.run.tags.get("analytics_platform/trigger"),
        )
    for key in keys:
        context.add_asset_metadata(result.partition_metadata(key), partition_key=key)
    return dg.MaterializeResult(metadata=result.metadata())


class EventAnomaliesConfig(dg.Config):
    as_of: Optional[str] = Field(
        default=None, description="ISO-8601 UTC end of the examined period (default: now)"
    )
    lookback_minutes: int = Field(
        default=60, ge=0, description="examine the complete windows that ended within this many minutes before as_of"
    )
    cooldown_minutes: int = Field(
        default=5, ge=0, description="an alerted window suppresses the same event's windows starting less than this later"
    )


@dg.asset(
    key=ANOMALIES_KEY,
    deps=[EVENTS_KEY],
    group_name=GROUP,
    kinds={"bigquery", "slack"},
    owners=OWNERS,
    tags={"domain": "mixpanel"},
    metadata={"dagster/column_schema": column_schema(ANOMALIES_SCHEMA)},
)
def event_anomalies(
    context: dg.AssetExecutionContext,
    config: EventAnomaliesConfig,
    warehouse: Warehouse,
    slack: SlackService,
) -> dg.MaterializeResult:
    """Event spikes: `{BIGQUERY_DATASET}.event_anomalies`, one row per (event_name, window_start).

    Reads the events table (per enabled event with an `alert_threshold`: counts per
    tumbling, epoch-aligned window of `time_window_minutes`, in warehouse SQL) for the
    complete windows that ended within `lookback_minutes` before `as_of`; a window whose
    count is strictly greater than the threshold is anomalous.  Writes new anomalous
    windows with `alert_status` 'pending' (to alert) or 'suppressed' (cooldown), posts
    one Slack message per pending alert (to the event's `alert_channel`) and marks it 'sent'.

    Re-run safety: a window is recorded at most once (`insert_missing` on
    (event_name, window_start)) and only 'pending' rows are posted, so re-running over the
    same data sends nothing new; undelivered alerts stay 'pending' and the next run
    delivers them once, whatever its lookback.  The cooldown state is the table itself.
    """
    with _as_failure():
        result = store.detect_event_anomalies(
            warehouse=warehouse,
            slack=slack,
            settings=get_settings(),
            as_of=parse_as_of(config.as_of),
            lookback_minutes=config.lookback_minutes,
            cooldown_minutes=config.cooldown_minutes,
            log=context.log.info,
            warn=context.log.warning,
        )
    return dg.MaterializeResult(metadata=result.metadata())


ASSETS = [mixpanel_events, event_anomalies]
