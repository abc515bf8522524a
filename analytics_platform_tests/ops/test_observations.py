"""Issue 17.6: the external PostHog/Firebase export tables are observed so their freshness
shows in the UI; the local default (old demo data, or no table) stays quiet.
Real DuckDB warehouse, the sensor evaluated by its own tick function."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.ops.observations import SOURCES, external_sources_observation
from analytics_platform.posthog import tables as P
from analytics_platform.posthog.assets import FIREBASE_EVENTS_KEY, POSTHOG_EVENTS_KEY, POSTHOG_SESSIONS_KEY

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _datasets(monkeypatch):
    for name in ("POSTHOG_DATASET_ID", "FIREBASE_DATASET_ID"):
        monkeypatch.delenv(name, raising=False)


def _load(warehouse, dataset, table, schema, rows):
    frame = pd.DataFrame(rows, columns=[c.name for c in schema])
    warehouse.load(frame, dataset, table, schema, mode="append")


def _posthog_events(warehouse, *times):
    _load(warehouse, "posthog_etl", P.EVENTS_TABLE, P.POSTHOG_EVENTS_SCHEMA,
          [{"uuid": f"u{i}", "event": "$pageview", "distinct_id": "d", "timestamp": t} for i, t in enumerate(times)])


def _tick(warehouse, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, resources={"warehouse": warehouse})
    return external_sources_observation.evaluate_tick(context)


def test_sources_are_observed_when_they_receive_data(duckdb_warehouse):
    _posthog_events(duckdb_warehouse, NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=1))
    _load(duckdb_warehouse, "posthog_etl", P.SESSIONS_TABLE, P.POSTHOG_SESSIONS_SCHEMA,
          [{"session_id": "s1", "distinct_id": "d", "start_timestamp": NOW - dt.timedelta(hours=2),
            "end_timestamp": NOW - dt.timedelta(minutes=90)}])
    micros = int((NOW - dt.timedelta(minutes=30)).timestamp() * 1_000_000)
    _load(duckdb_warehouse, "firebase_etl_prod", P.EVENTS_TABLE, P.FIREBASE_EVENTS_SCHEMA,
          [{"event_date": NOW.strftime("%Y%m%d"), "event_timestamp": micros, "event_name": "e", "user_id": "u"}])

    first = _tick(duckdb_warehouse)
    observed = {e.asset_key: e for e in first.asset_events}
    assert set(observed) == {POSTHOG_EVENTS_KEY, POSTHOG_SESSIONS_KEY, FIREBASE_EVENTS_KEY}  # no users table
    last = observed[POSTHOG_EVENTS_KEY].metadata["dagster/last_updated_timestamp"].value
    assert last == (NOW - dt.timedelta(hours=1)).timestamp()
    assert observed[POSTHOG_EVENTS_KEY].metadata["rows_last_7_days"].value == 2
    assert observed[FIREBASE_EVENTS_KEY].metadata["dagster/last_updated_timestamp"].value == micros / 1_000_000
    assert observed[POSTHOG_SESSIONS_KEY].metadata["latest_record_at"].value == (NOW - dt.timedelta(minutes=90)).isoformat()

    # nothing new: no event (the event log does not grow every 15 minutes)
    second = _tick(duckdb_warehouse, first.cursor)
    assert not second.asset_events and "unchanged" in second.skip_message

    # new data in one source: one observation, of that source
    _posthog_events(duckdb_warehouse, NOW - dt.timedelta(minutes=5))
    third = _tick(duckdb_warehouse, second.cursor)
    assert [e.asset_key for e in third.asset_events] == [POSTHOG_EVENTS_KEY]


def test_local_demo_data_is_quiet(duckdb_warehouse):
    """Only old rows (the demo's 2024 days) or no table at all: no observation, a reason."""
    _posthog_events(duckdb_warehouse, dt.datetime(2024, 6, 5, 10, tzinfo=UTC))
    result = _tick(duckdb_warehouse)
    assert not result.asset_events and not result.run_requests
    assert "no record in the last 7 days" in result.skip_message and "no table" in result.skip_message
    assert len(SOURCES) == 4
