"""Asset checks of the raw events table.

The uniqueness and NULL checks examine the days the latest ingestion wrote: the latest
materialized partition and the ``MIXPANEL_LATE_DAYS`` days before it (the window the
15-minute refresh and the late sweep rewrite) — bounded, so they stay cheap on BigQuery.
Freshness (the current day refreshed within 45 minutes) is evaluated on its own sensor:
``analytics_platform/ops/freshness.py``.
"""

import datetime as dt

import dagster as dg

from analytics_platform.common import partition_day, to_int, utc_now
from analytics_platform.mixpanel.assets import EVENTS_KEY
from analytics_platform.resources.warehouse import Warehouse
from analytics_platform.settings import get_settings


def _latest_partition(instance: dg.DagsterInstance) -> dt.date | None:
    event = instance.get_latest_materialization_event(EVENTS_KEY)
    mat = event.asset_materialization if event else None
    if mat is None or not mat.partition:
        return None
    try:
        return partition_day(mat.partition)
    except ValueError:
        return None


def _checked_days(context: dg.AssetCheckExecutionContext) -> tuple[dt.date, dt.date]:
    settings = get_settings()
    anchor = _latest_partition(context.instance) or utc_now().date()
    return anchor - dt.timedelta(days=max(settings.mixpanel_late_days, 0)), anchor


def _table_exists(warehouse: Warehouse) -> bool:
    s = get_settings()
    return warehouse.table_exists(s.bigquery_dataset, s.bigquery_table)


@dg.asset_check(asset=EVENTS_KEY, name="event_id_unique", description="No event_id appears twice in the recently written days.")
def event_id_unique(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    s = get_settings()
    first, last = _checked_days(context)
    if not _table_exists(warehouse):
        return dg.AssetCheckResult(passed=True, metadata={"note": "table does not exist yet"})
    dups = warehouse.run_file(
        "mixpanel/check_duplicate_event_ids",
        {"date_from": first, "date_to": last},
        dataset=s.bigquery_dataset,
        table=s.bigquery_table,
    )
    return dg.AssetCheckResult(
        passed=len(dups) == 0,
        metadata={
            "checked_days": f"{first}..{last}",
            "duplicated_event_ids": len(dups),
            "examples": dg.MetadataValue.json([str(x) for x in dups["event_id"].tolist()[:10]]),
        },
    )


@dg.asset_check(asset=EVENTS_KEY, name="event_timestamp_not_null", description="Every row has an event_timestamp and an event_id.")
def event_timestamp_not_null(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    s = get_settings()
    first, last = _checked_days(context)
    if not _table_exists(warehouse):
        return dg.AssetCheckResult(passed=True, metadata={"note": "table does not exist yet"})
    row = warehouse.run_file(
        "mixpanel/check_null_timestamps",
        {"date_from": first, "date_to": last},
        dataset=s.bigquery_dataset,
        table=s.bigquery_table,
    ).iloc[0]
    nulls = to_int(row["null_timestamps"])
    null_ids = to_int(row["null_event_ids"])
    return dg.AssetCheckResult(
        passed=nulls == 0 and null_ids == 0,
        metadata={
            "checked_days": f"{first}..{last}",
            "null_event_timestamps": nulls,
            "null_event_ids": null_ids,
            "rows_checked": to_int(row["rows_checked"]),
        },
    )


ASSET_CHECKS = [event_id_unique, event_timestamp_not_null]
