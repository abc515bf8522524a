"""Fixtures and helpers of the cohorts tests: seed the raw events table directly, build
resources against the stubs (or their local fallbacks), materialize the cohort assets."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.cohorts import tables as T
from analytics_platform.cohorts.assets import COHORT_KEY, TEMP_USERS_KEY, state_loss_temp_user_cohort, state_loss_temp_users
from analytics_platform.cohorts.checks import ASSET_CHECKS
from analytics_platform.cohorts.rules import PRIVACY_EVENT, RESTORE_EVENT
from analytics_platform.resources.local.mixpanel_files import LocalMixpanel
from analytics_platform.resources.local.slack_outbox import LocalSlack
from analytics_platform.resources.mixpanel import MixpanelService
from analytics_platform.resources.slack import SlackService
from analytics_platform.mixpanel.tables import EVENTS_SCHEMA as MIXPANEL_EVENTS_SCHEMA

UTC = dt.timezone.utc
EVENTS_DATASET = "mixpanel_data"
EVENTS_TABLE = "mixpanel_events"
COHORT_DATASET = "peerplay"

# The ingestion table's columns (the Mixpanel domain's contract); the rule reads only the first six.
EVENTS_SCHEMA = MIXPANEL_EVENTS_SCHEMA


def ts(text: str) -> dt.datetime:
    """``"2024-06-05T10:00:00"`` (or with fractional seconds) as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def event(name: str, distinct_id: Optional[str], at: dt.datetime, **props: Any) -> dict:
    """One row of the events table; ``props`` become the JSON ``properties``.

    The extra columns ``device_id`` / ``os`` are filled with misleading values on purpose:
    the rule must read the properties, not them.
    """
    properties = {"time": at.timestamp(), "distinct_id": distinct_id, **props}
    return {
        "event_id": uuid.uuid4().hex,
        "event_name": name,
        "distinct_id": distinct_id,
        "event_timestamp": at,
        "inserted_at": dt.datetime.now(dt.timezone.utc),  # written now, as ingestion stamps it
        "properties": json.dumps(properties),
        "event_date": at.date(),
        "device_id": "column-device-not-used",
        "os": "Android",
        "mp_processing_time_ms": int(at.timestamp() * 1000),
    }


def privacy(distinct_id: Optional[str], at: dt.datetime, device: Optional[str] = None, os: Optional[str] = "Android", **props: Any) -> dict:
    if device is not None:
        props.setdefault("$device_id", device)
    if os is not None:
        props.setdefault("mp_os", os)
    return event(PRIVACY_EVENT, distinct_id, at, **props)


def restore(distinct_id: Optional[str], at: dt.datetime, device: Optional[str] = None, **props: Any) -> dict:
    if device is not None:
        props.setdefault("$device_id", device)
    props.setdefault("mp_os", "Android")
    return event(RESTORE_EVENT, distinct_id, at, **props)


def seed_events(warehouse, rows: Iterable[dict]) -> int:
    frame = pd.DataFrame(list(rows))
    return warehouse.load(frame, EVENTS_DATASET, EVENTS_TABLE, EVENTS_SCHEMA).rows_staged


def seed_temp_users(warehouse, distinct_ids: Iterable[str], synced_at: Optional[dt.datetime] = None, **extra: Any) -> None:
    ids = list(distinct_ids)
    frame = pd.DataFrame(
        {
            "distinct_id": ids,
            "device_id": [f"dev-{i}" for i in ids],
            "privacy_event_at": extra.get("privacy_event_at", ts("2024-06-01T00:00:00")),
            "restore_event_at": extra.get("restore_event_at", ts("2024-06-01T00:01:00")),
            "detected_at": ts("2024-06-01T11:00:00"),
            "mixpanel_synced_at": synced_at,
        }
    )
    warehouse.load(frame, COHORT_DATASET, T.TEMP_USERS_TABLE, T.TEMP_USERS_SCHEMA, mode="insert_missing", key_columns=["distinct_id"])


def temp_users(warehouse) -> pd.DataFrame:
    return warehouse.query(
        f"SELECT * FROM `{COHORT_DATASET}.{T.TEMP_USERS_TABLE}` ORDER BY distinct_id"
    )


def audit_rows(warehouse, run_id: Optional[str] = None) -> pd.DataFrame:
    sql = (
        f"SELECT process_name, run_id, step, status, logged_at, TO_JSON_STRING(details) AS details "
        f"FROM `{COHORT_DATASET}.{T.AUDIT_TABLE}`"
    )
    params = None
    if run_id is not None:
        sql += " WHERE run_id = @run_id"
        params = {"run_id": run_id}
    frame = warehouse.query(sql + " ORDER BY logged_at, step", params)
    frame["details"] = [json.loads(d) if isinstance(d, str) else d for d in frame["details"]]
    return frame


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    for mat in result.asset_materializations_for_node("__".join(key.path)):
        return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"{key} was not materialized")


def check_evaluation(result: dg.ExecuteInProcessResult, name: str):
    found = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert found, f"check {name} not evaluated"
    return found[-1]


@pytest.fixture(autouse=True)
def _cohort_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Default dataset names and marker, whatever the developer's shell holds."""
    for name in (
        "BIGQUERY_DATASET",
        "BIGQUERY_TABLE",
        "COHORT_DATASET",
        "COHORT_MARKER",
        "MIXPANEL_PROJECT_TOKEN",
        "SLACK_BOT_TOKEN",
        "SLACK_WEBHOOK_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def local_mixpanel(tmp_path: Path) -> LocalMixpanel:
    """No project token: /engage updates go to the local outbox."""
    return LocalMixpanel(local_dir=str(tmp_path / "data"))


@pytest.fixture
def local_slack(tmp_path: Path) -> LocalSlack:
    return LocalSlack(outbox_path=str(tmp_path / "data" / "outbox" / "slack_alerts.jsonl"))


def outbox_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def materialize(
    warehouse,
    mixpanel: MixpanelService,
    slack: SlackService,
    *,
    keys: Iterable[dg.AssetKey] = (TEMP_USERS_KEY, COHORT_KEY),
    as_of: Optional[str] = None,
    lookback_days: Optional[int] = None,
    remove_active: Optional[bool] = None,
    raise_on_error: bool = True,
    instance: Optional[dg.DagsterInstance] = None,
) -> dg.ExecuteInProcessResult:
    keys = list(keys)
    config: dict[str, Any] = {}
    if as_of is not None:
        config["as_of"] = as_of
    if lookback_days is not None:
        config["lookback_days"] = lookback_days
    if remove_active is not None:
        config["remove_active"] = remove_active
    run_config = {"ops": {"peerplay__state_loss_temp_users": {"config": config}}} if config and TEMP_USERS_KEY in keys else None
    return dg.materialize(
        [state_loss_temp_users, state_loss_temp_user_cohort, *ASSET_CHECKS],
        selection=dg.AssetSelection.assets(*keys),
        resources={"warehouse": warehouse, "mixpanel": mixpanel, "slack": slack},
        run_config=run_config,
        raise_on_error=raise_on_error,
        instance=instance,
    )
