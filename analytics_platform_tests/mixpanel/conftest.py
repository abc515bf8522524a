"""Fixtures and helpers of the mixpanel tests: resources on the stub servers, event
builders, materialize helpers and table readers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.common import UTC
from analytics_platform.mixpanel.assets import ANOMALIES_KEY, EVENTS_KEY, event_anomalies, mixpanel_events
from analytics_platform.mixpanel.checks import ASSET_CHECKS
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource

DATASET = "mixpanel_data"
TABLE = "mixpanel_events"

# Inline events configuration used by most tests (EVENTS_CONFIG wins over the file).
TEST_CONFIG = {
    "events": [
        {"name": "app_open", "enabled": True},
        {
            "name": "impression_error_null_pointer_detected",
            "enabled": True,
            "alert_threshold": 5,
            "alert_channel": "#alerts-errors",
            "time_window_minutes": 1,
        },
        {"name": "purchase_failed", "enabled": True, "alert_threshold": 3, "alert_channel": "#alerts", "time_window_minutes": 5},
        {"name": "disabled_event", "enabled": False, "alert_threshold": 1},
    ]
}


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def mp_event(name: str, at: dt.datetime, distinct_id: str = "u1", insert_id: Optional[str] = None, *, ms: bool = False, **props: Any) -> dict:
    """One Mixpanel export record (time in seconds, or milliseconds with ``ms``)."""
    seconds = at.timestamp()
    properties: dict[str, Any] = {"time": int(round(seconds * 1000)) if ms else int(seconds), "distinct_id": distinct_id}
    if insert_id is not None:
        properties["$insert_id"] = insert_id
    properties.update(props)
    return {"event": name, "properties": properties}


def line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture(autouse=True)
def _mixpanel_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Default dataset/table names and an inline events config, whatever the shell holds."""
    for name in ("BIGQUERY_DATASET", "BIGQUERY_TABLE", "EVENTS_CONFIG_PATH", "MIXPANEL_LATE_DAYS",
                 "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_DEFAULT_CHANNEL", "DAGSTER_WEBSERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EVENTS_CONFIG", json.dumps(TEST_CONFIG))
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def mixpanel(mixpanel_stub) -> MixpanelResource:  # noqa: F811
    """MixpanelResource on the stub (service-account auth, fast retries)."""
    return MixpanelResource(**mixpanel_stub.resource_kwargs())


@pytest.fixture
def slack(slack_stub) -> SlackResource:  # noqa: F811
    """SlackResource on the stub (bot token: per-event channels)."""
    return SlackResource(**slack_stub.resource_kwargs())


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    for mat in result.asset_materializations_for_node("__".join(key.path)):
        return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"{key} was not materialized")


def materialize_events(
    warehouse,
    mixpanel_resource: MixpanelResource,
    partition: Optional[str] = None,
    *,
    partition_range: Optional[tuple[str, str]] = None,
    instance: Optional[dg.DagsterInstance] = None,
    raise_on_error: bool = True,
    with_checks: bool = False,
) -> dg.ExecuteInProcessResult:
    tags = {}
    if partition_range:
        tags = {
            "dagster/asset_partition_range_start": partition_range[0],
            "dagster/asset_partition_range_end": partition_range[1],
        }
    return dg.materialize(
        [mixpanel_events, *(ASSET_CHECKS if with_checks else [])],
        selection=dg.AssetSelection.assets(EVENTS_KEY),
        partition_key=partition,
        tags=tags or None,
        resources={"warehouse": warehouse, "mixpanel": mixpanel_resource},
        instance=instance,
        raise_on_error=raise_on_error,
    )


def materialize_anomalies(
    warehouse,
    slack_resource: SlackResource,
    as_of: str,
    *,
    lookback_minutes: Optional[int] = None,
    cooldown_minutes: Optional[int] = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    config: dict[str, Any] = {"as_of": as_of}
    if lookback_minutes is not None:
        config["lookback_minutes"] = lookback_minutes
    if cooldown_minutes is not None:
        config["cooldown_minutes"] = cooldown_minutes
    return dg.materialize(
        [event_anomalies],
        selection=dg.AssetSelection.assets(ANOMALIES_KEY),
        resources={"warehouse": warehouse, "slack": slack_resource},
        run_config={"ops": {"mixpanel_data__event_anomalies": {"config": config}}},
        raise_on_error=raise_on_error,
    )


def events_rows(warehouse, where: str = "TRUE", params: Optional[dict] = None) -> pd.DataFrame:
    return warehouse.query(
        "SELECT event_id, event_name, distinct_id, event_timestamp, inserted_at, "
        "TO_JSON_STRING(properties) AS properties_json, event_date, device_id, os, mp_processing_time_ms "
        f"FROM `{DATASET}.{TABLE}` WHERE {where} ORDER BY event_timestamp, event_id",
        params,
    )


def raw_properties(warehouse, event_id: str) -> str:
    """The stored properties text (DuckDB keeps the JSON text verbatim)."""
    frame = warehouse.query(
        f"SELECT properties FROM `{DATASET}.{TABLE}` WHERE event_id = @id", {"id": event_id}
    )
    value = frame["properties"].iloc[0]
    return value if isinstance(value, str) else json.dumps(value)


def rejected_rows(warehouse) -> pd.DataFrame:
    return warehouse.query(
        f"SELECT raw_line, reason, partition_date, seen_at FROM `{DATASET}.mixpanel_events_rejected` "
        "ORDER BY partition_date, raw_line"
    )


def anomaly_rows(warehouse) -> pd.DataFrame:
    return warehouse.query(
        f"SELECT event_name, window_start, window_minutes, event_count, threshold, channel, alert_status, "
        f"alerted_at, TO_JSON_STRING(sample) AS sample_json, delivery_attempts "
        f"FROM `{DATASET}.event_anomalies` ORDER BY event_name, window_start"
    )


def seed_events_table(warehouse, records: Sequence[tuple[str, dt.datetime]]) -> None:
    """Write events straight into the events table (for detection tests)."""
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA, ensure_events_table

    ensure_events_table(warehouse, DATASET, TABLE)
    rows = []
    for i, (name, at) in enumerate(records):
        rows.append(
            {
                "event_id": f"seed-{name}-{at.isoformat()}-{i}",
                "event_name": name,
                "distinct_id": f"user-{i % 7}",
                "event_timestamp": at,
                "inserted_at": at,
                "properties": json.dumps({"time": int(at.timestamp()), "distinct_id": f"user-{i % 7}", "$os": "iOS", "level": i}),
                "event_date": at.date(),
                "device_id": f"dev-{i % 7}",
                "os": "iOS",
                "mp_processing_time_ms": int(at.timestamp() * 1000),
            }
        )
    warehouse.load(pd.DataFrame(rows), DATASET, TABLE, EVENTS_SCHEMA, mode="append")


def burst(name: str, start: dt.datetime, count: int, spread_seconds: int = 50) -> list[tuple[str, dt.datetime]]:
    """``count`` events of ``name`` spread over ``spread_seconds`` from ``start``."""
    step = spread_seconds / max(count, 1)
    return [(name, start + dt.timedelta(seconds=i * step)) for i in range(count)]
