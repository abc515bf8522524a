"""Issue 14.3: a Mixpanel project created before 2023 reads from_date/to_date as dates of
its own time zone (MIXPANEL_PROJECT_TIMEZONE).  The ingestion asks for the local dates that
cover each UTC partition, keeps only the partition's own UTC events, and never asks for a
to_date after the project's local today (the stub answers 400 like Mixpanel).  Partitions
stay UTC days.  On DuckDB and the BigQuery emulator (``warehouse``)."""

from __future__ import annotations

import datetime as dt

import pytest

from analytics_platform.mixpanel.rules import export_dates
from analytics_platform.mixpanel.store import ingest_ranges
from analytics_platform.settings import SettingsError, get_settings
from analytics_platform_tests.mixpanel.conftest import (
    DATASET,
    EVENTS_KEY,
    TABLE,
    events_rows,
    materialize_events,
    metadata_of,
    mp_event,
    ts,
)

DAY = "2024-06-05"
AROUND_MIDNIGHTS = [
    mp_event("app_open", ts("2024-06-04T23:30:00"), "u1", "utc-jun4-late"),  # LA: Jun 4 16:30, Tokyo: Jun 5 08:30
    mp_event("app_open", ts("2024-06-05T00:30:00"), "u2", "utc-jun5-early"),  # LA: Jun 4 17:30, Tokyo: Jun 5 09:30
    mp_event("app_open", ts("2024-06-05T23:30:00"), "u3", "utc-jun5-late"),  # LA: Jun 5 16:30, Tokyo: Jun 6 08:30
    mp_event("app_open", ts("2024-06-06T00:30:00"), "u4", "utc-jun6-early"),  # LA: Jun 5 17:30, Tokyo: Jun 6 09:30
]


def _seed(stub) -> None:
    stub.add_events("2024-06-04", AROUND_MIDNIGHTS[:1])
    stub.add_events("2024-06-05", AROUND_MIDNIGHTS[1:3])
    stub.add_events("2024-06-06", AROUND_MIDNIGHTS[3:])


@pytest.mark.parametrize(
    "zone, asked, outside",
    [
        ("America/Los_Angeles", ("2024-06-04", "2024-06-05"), 2),  # west of UTC: the day before too
        ("Asia/Tokyo", ("2024-06-05", "2024-06-06"), 2),  # east of UTC: the day after too
        ("UTC", ("2024-06-05", "2024-06-05"), 0),
    ],
)
def test_a_utc_partition_asks_the_covering_local_dates_and_keeps_its_own_events(
    warehouse, mixpanel_stub, mixpanel, monkeypatch, zone, asked, outside
):
    monkeypatch.setenv("MIXPANEL_PROJECT_TIMEZONE", zone)
    mixpanel_stub.project_timezone = zone
    _seed(mixpanel_stub)
    result = materialize_events(warehouse, mixpanel, DAY)
    (request,) = mixpanel_stub.export_requests
    assert (request["params"]["from_date"], request["params"]["to_date"]) == asked
    assert sorted(events_rows(warehouse)["event_id"]) == ["utc-jun5-early", "utc-jun5-late"]
    meta = metadata_of(result, EVENTS_KEY)
    assert meta["rows_outside_requested_days"] == outside
    assert meta["dagster/row_count"] == 2


def test_the_current_day_never_asks_past_the_projects_local_today(duckdb_warehouse, mixpanel_stub, mixpanel):
    """03:00 UTC on June 5 is still June 4 in Los Angeles: asking to_date=2024-06-05 would be
    a 400 every tick for eight hours each night. The refresh asks June 4 only and loads what
    of UTC June 5 has happened."""
    now = ts("2024-06-05T03:00:00")
    mixpanel_stub.project_timezone, mixpanel_stub.now = "America/Los_Angeles", now
    mixpanel_stub.add_events("2024-06-05", [mp_event("app_open", ts("2024-06-05T01:00:00"), "u1", "so-far")])
    result = ingest_ranges(
        warehouse=duckdb_warehouse, mixpanel=mixpanel, dataset=DATASET, table=TABLE,
        ranges=[(dt.date(2024, 6, 5), dt.date(2024, 6, 5))], events=["app_open"], now=now,
        project_timezone="America/Los_Angeles",
    )
    (request,) = mixpanel_stub.export_requests
    assert request["status"] == 200
    assert (request["params"]["from_date"], request["params"]["to_date"]) == ("2024-06-04", "2024-06-04")
    assert result.rows_inserted == 1
    assert list(events_rows(duckdb_warehouse)["event_id"]) == ["so-far"]


def test_the_stub_refuses_a_to_date_after_the_local_today(duckdb_warehouse, mixpanel_stub, mixpanel):
    """The 400 the clamp avoids is real (the stub answers it like Mixpanel)."""
    mixpanel_stub.project_timezone, mixpanel_stub.now = "America/Los_Angeles", ts("2024-06-05T03:00:00")
    with pytest.raises(Exception, match="400"):
        mixpanel.export_to_file(dt.date(2024, 6, 5), dt.date(2024, 6, 5), ["app_open"], dest=duckdb_warehouse.path + ".export")


def test_export_dates_rule():
    day = dt.date(2024, 6, 5)
    later = ts("2024-07-01T00:00:00")
    assert export_dates(day, day, "UTC", later) == (day, day)
    assert export_dates(day, dt.date(2024, 6, 7), "America/Los_Angeles", later) == (dt.date(2024, 6, 4), dt.date(2024, 6, 7))
    assert export_dates(day, day, "Asia/Tokyo", later) == (day, dt.date(2024, 6, 6))
    # clamped to the project's local today; None when nothing has happened there yet
    assert export_dates(day, day, "Asia/Tokyo", ts("2024-06-05T03:00:00")) == (day, day)
    assert export_dates(dt.date(2024, 6, 6), dt.date(2024, 6, 6), "UTC", ts("2024-06-05T12:00:00")) is None


def test_an_unknown_time_zone_is_a_settings_error_naming_the_variable():
    with pytest.raises(SettingsError, match="MIXPANEL_PROJECT_TIMEZONE must be an IANA time zone"):
        get_settings({"MIXPANEL_PROJECT_TIMEZONE": "Mars/Olympus"})
    assert get_settings({}).mixpanel_project_timezone == "UTC"
