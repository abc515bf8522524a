"""Asset checks of the events table: unique event_id, no NULL event_timestamp, freshness."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from analytics_platform.common import utc_now
from analytics_platform.mixpanel.tables import EVENTS_SCHEMA
from analytics_platform_tests.mixpanel.conftest import DATASET, TABLE, materialize_events, mp_event, ts


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _today_events(stub, day: dt.date) -> None:
    at = dt.datetime(day.year, day.month, day.day, 0, 0, 1, tzinfo=dt.timezone.utc)
    stub.add_events(day.isoformat(), [mp_event("app_open", at, "u1", "today-1")])


def test_checks_pass_after_a_clean_refresh_of_today(duckdb_warehouse, mixpanel_stub, mixpanel):
    today = utc_now().date()
    _today_events(mixpanel_stub, today)
    with dg.instance_for_test() as instance:
        result = materialize_events(duckdb_warehouse, mixpanel, today.isoformat(), instance=instance, with_checks=True)
    checks = _evaluations(result)
    assert set(checks) == {"event_id_unique", "event_timestamp_not_null", "late_rows_within_threshold"}  # freshness: ops/freshness.py
    assert all(c.passed for c in checks.values())


def test_checks_catch_duplicates_and_null_timestamps(duckdb_warehouse, mixpanel_stub, mixpanel):
    day = "2024-06-05"
    mixpanel_stub.add_events(day, [mp_event("app_open", ts("2024-06-05T01:00:00"), "u1", "x1")])
    materialize_events(duckdb_warehouse, mixpanel, day)
    # corrupt the table behind the pipeline's back
    bad = pd.DataFrame(
        [
            {"event_id": "x1", "event_name": "app_open", "event_timestamp": ts("2024-06-05T01:00:00"), "event_date": dt.date(2024, 6, 5)},
            {"event_id": "x2", "event_name": "app_open", "event_timestamp": None, "event_date": dt.date(2024, 6, 5)},
        ]
    )
    duckdb_warehouse.load(bad, DATASET, TABLE, EVENTS_SCHEMA, mode="append")
    with dg.instance_for_test() as instance:
        result = materialize_events(duckdb_warehouse, mixpanel, day, instance=instance, with_checks=True)
    checks = _evaluations(result)
    assert not checks["event_id_unique"].passed
    assert checks["event_id_unique"].metadata["duplicated_event_ids"].value == 1
    assert not checks["event_timestamp_not_null"].passed
    assert checks["event_timestamp_not_null"].metadata["null_event_timestamps"].value == 1


def test_an_empty_day_materializes_zero_rows_with_green_checks(warehouse, mixpanel_stub, mixpanel):
    """A day for which the export returns no event at all (today and a past day, on DuckDB
    and the BigQuery emulator): the run succeeds with 0 rows and the blocking checks pass
    (a count over zero rows is NULL on DuckDB, 0 on BigQuery: both read as 0)."""
    today = utc_now().date()
    with dg.instance_for_test() as instance:
        for day in (today, dt.date(2024, 6, 5)):
            result = materialize_events(warehouse, mixpanel, day.isoformat(), instance=instance, with_checks=True)
            assert result.success
            (mat,) = result.asset_materializations_for_node("mixpanel_data__mixpanel_events")
            assert mat.metadata["dagster/row_count"].value == 0
            checks = _evaluations(result)
            assert checks["event_id_unique"].passed
            assert checks["event_timestamp_not_null"].passed
            assert checks["event_timestamp_not_null"].metadata["rows_checked"].value == 0
