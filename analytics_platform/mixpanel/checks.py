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
from analytics_platform.mixpanel import rules as R
from analytics_platform.mixpanel.assets import EVENTS_KEY
from analytics_platform.mixpanel.tables import EXPORT_LOG_TABLE
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


# The completeness check looks at the days of the export log within this many days.
COMPLETENESS_DAYS = 14


def late_rows_report(warehouse: Warehouse, dataset: str, date_from: dt.date, date_to: dt.date,
                     max_percent: float) -> list[R.LateRows]:
    """Each logged day of ``[date_from, date_to]``: rows at its first export after it ended,
    rows later re-exports added, and the threshold (``sql/mixpanel/export_log_completeness.sql``)."""
    if not warehouse.table_exists(dataset, EXPORT_LOG_TABLE):
        return []
    rows = warehouse.run_file(
        "mixpanel/export_log_completeness",
        {"date_from": date_from, "date_to": date_to},
        dataset=dataset,
        export_log=EXPORT_LOG_TABLE,
    )
    out = []
    for rec in rows.to_dict("records"):
        at_close = to_int(rec["rows_at_close"])
        day = rec["day"]
        day = day if isinstance(day, dt.date) and not isinstance(day, dt.datetime) else partition_day(str(day)[:10])
        out.append(R.LateRows(day, at_close, to_int(rec["late_rows"]), R.late_rows_threshold(at_close, max_percent)))
    return out


@dg.asset_check(
    asset=EVENTS_KEY,
    name="late_rows_within_threshold",
    description=(
        "Completeness record: no day of the last 14 days gained more new rows from a re-export made after "
        "it had ended than MIXPANEL_LATE_ROWS_MAX_PERCENT (default 1) % of the rows it had at its first "
        "export after it ended (mixpanel_export_log)."
    ),
)
def late_rows_within_threshold(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    s = get_settings()
    today = utc_now().date()
    first = today - dt.timedelta(days=COMPLETENESS_DAYS)
    report = late_rows_report(warehouse, s.bigquery_dataset, first, today, s.mixpanel_late_rows_max_percent)
    flagged = [r for r in report if r.flagged]
    return dg.AssetCheckResult(
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "checked_days": f"{first}..{today}",
            "days_logged": len(report),
            "max_late_percent": s.mixpanel_late_rows_max_percent,
            "flagged_days": len(flagged),
            "late_rows_total": sum(r.late_rows for r in report),
            "flagged": dg.MetadataValue.json([
                {"day": r.day.isoformat(), "rows_at_close": r.rows_at_close, "late_rows": r.late_rows,
                 "late_percent": r.late_percent}
                for r in flagged[:20]
            ]),
            "table": f"{s.bigquery_dataset}.{EXPORT_LOG_TABLE}",
        },
    )


ASSET_CHECKS = [event_id_unique, event_timestamp_not_null, late_rows_within_threshold]
