"""External BigQuery sources observed, so their freshness shows in the UI.

The PostHog and Firebase export tables (``posthog_etl/events``, ``posthog_etl/sessions``,
``firebase_etl_prod/users``, ``firebase_etl_prod/events``) are written by other systems;
the sensor ``external_sources_observation`` reads, every 15 minutes, each table's newest
record of the last ``WINDOW_DAYS`` days (a bounded scan) and reports an ``AssetObservation``
with ``dagster/last_updated_timestamp`` when it moved: the asset page shows when the source
last received data. Nothing new, a missing table or only older data (the local demo's 2024
days): no event, a skip reason.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Optional

import dagster as dg
import pandas as pd

from analytics_platform.common import UTC, utc_now
from analytics_platform.posthog import tables as P
from analytics_platform.posthog.assets import (
    FIREBASE_EVENTS_KEY,
    FIREBASE_USERS_KEY,
    POSTHOG_EVENTS_KEY,
    POSTHOG_SESSIONS_KEY,
)
from analytics_platform.resources.warehouse import Warehouse
from analytics_platform.settings import Settings, get_settings

WINDOW_DAYS = 7


@dataclass(frozen=True)
class Source:
    key: dg.AssetKey
    dataset_setting: str  # the Settings field naming its dataset
    table: str
    ts_column: Optional[str]  # None: the Firebase export's INT64 micros event_timestamp

    def dataset(self, settings: Settings) -> str:
        return getattr(settings, self.dataset_setting)


SOURCES = (
    Source(POSTHOG_EVENTS_KEY, "posthog_dataset_id", P.EVENTS_TABLE, "timestamp"),
    Source(POSTHOG_SESSIONS_KEY, "posthog_dataset_id", P.SESSIONS_TABLE, "end_timestamp"),
    Source(FIREBASE_USERS_KEY, "firebase_dataset_id", P.USERS_TABLE, "created_at"),
    Source(FIREBASE_EVENTS_KEY, "firebase_dataset_id", P.EVENTS_TABLE, None),
)


def latest_record(warehouse: Warehouse, source: Source, settings: Settings, now: dt.datetime) -> tuple[Optional[dt.datetime], int]:
    """(newest record time in the window, rows in the window) of one source table."""
    params = {"since": now - dt.timedelta(days=WINDOW_DAYS), "until": now + dt.timedelta(days=1)}
    dataset = source.dataset(settings)
    if source.ts_column is None:
        frame = warehouse.run_file("ops/observe_firebase_events", params, dataset=dataset, table=source.table)
    else:
        frame = warehouse.run_file(
            "ops/observe_latest_timestamp", params, dataset=dataset, table=source.table, ts_column=source.ts_column
        )
    row = frame.iloc[0]
    latest = row["latest"]
    rows = int(row["recent_rows"]) if pd.notna(row["recent_rows"]) else 0
    if latest is None or pd.isna(latest):
        return None, rows
    stamp = pd.Timestamp(latest)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.to_pydatetime(), rows


def observe(warehouse: Warehouse, settings: Settings, now: dt.datetime, cursor: dict[str, str]) -> tuple[list[dg.AssetObservation], dict[str, str], list[str]]:
    """Observations of the sources whose newest record moved since ``cursor``; the new
    cursor; why the others were skipped."""
    events, skipped, cursor = [], [], dict(cursor)
    for source in SOURCES:
        dataset, name = source.dataset(settings), source.key.to_user_string()
        if not warehouse.table_exists(dataset, source.table):
            skipped.append(f"{name}: no table {dataset}.{source.table}")
            continue
        latest, rows = latest_record(warehouse, source, settings, now)
        if latest is None:
            skipped.append(f"{name}: no record in the last {WINDOW_DAYS} days")
            continue
        if cursor.get(name) == latest.isoformat():
            skipped.append(f"{name}: unchanged since {latest:%Y-%m-%d %H:%M} UTC")
            continue
        cursor[name] = latest.isoformat()
        events.append(
            dg.AssetObservation(
                asset_key=source.key,
                metadata={
                    "dagster/last_updated_timestamp": dg.MetadataValue.timestamp(latest),
                    "latest_record_at": latest.isoformat(),
                    f"rows_last_{WINDOW_DAYS}_days": rows,
                    "table": f"{dataset}.{source.table}",
                },
            )
        )
    return events, cursor, skipped


@dg.sensor(
    name="external_sources_observation",
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 15 minutes, observes the PostHog and Firebase export tables (newest "
    "record of the last 7 days) so their last update shows on their asset pages; no run.",
)
def external_sources_observation(context: dg.SensorEvaluationContext, warehouse: Warehouse):
    try:
        cursor = json.loads(context.cursor) if context.cursor else {}
    except ValueError:
        cursor = {}
    events, cursor, skipped = observe(warehouse, get_settings(), utc_now(), cursor)
    if events:
        return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    return dg.SkipReason("; ".join(skipped) or "no source")
