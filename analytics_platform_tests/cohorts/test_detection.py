"""Acceptance 1 and 4: the detection rule at its boundaries, insert-if-absent and
overlapping runs, on DuckDB and on the BigQuery API emulator (``warehouse`` fixture)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from analytics_platform.cohorts.assets import EVENTS_KEY, TEMP_USERS_KEY
from analytics_platform_tests.cohorts.conftest import (
    COHORT_DATASET,
    EVENTS_DATASET,
    EVENTS_SCHEMA,
    EVENTS_TABLE,
    event,
    materialize,
    metadata_of,
    privacy,
    restore,
    seed_events,
    seed_temp_users,
    temp_users,
    ts,
)

AS_OF = "2024-06-06T00:00:00Z"  # window: privacy events in [2024-06-04T00:00, 2024-06-06T00:00)
T0 = ts("2024-06-05T10:00:00")
S = dt.timedelta(seconds=1)


def boundary_events() -> tuple[list[dict], set[str]]:
    """One scenario per spec edge; returns (rows, the distinct_ids that must be detected)."""
    rows: list[dict] = []
    expected: set[str] = set()

    def case(name: str, inside: bool, *events: dict) -> None:
        rows.extend(events)
        if inside:
            expected.add(name)

    case("gap_120s", True, privacy("gap_120s", T0, "d-120"), restore("real-120", T0 + 120 * S, "d-120"))
    case("gap_121s", False, privacy("gap_121s", T0, "d-121"), restore("real-121", T0 + 121 * S, "d-121"))
    case("gap_120_5s", False, privacy("gap_120_5s", T0, "d-1205"), restore("r", T0 + dt.timedelta(seconds=120.5), "d-1205"))
    case("gap_0s", True, privacy("gap_0s", T0, "d-0"), restore("real-0", T0, "d-0"))
    case("restore_before", False, privacy("restore_before", T0, "d-rb"), restore("real-rb", T0 - 1 * S, "d-rb"))
    case("other_device", False, privacy("other_device", T0, "d-od-1"), restore("real-od", T0 + 10 * S, "d-od-2"))
    case(
        "empty_device",
        False,
        privacy("empty_device", T0, ""),
        restore("real-ed", T0 + 10 * S, ""),
    )
    case(
        "missing_device",
        False,
        privacy("missing_device", T0 + 3 * S, None),
        restore("real-md", T0 + 13 * S, None),
    )
    case("ios", False, privacy("ios", T0, "d-ios", os="iOS"), restore("real-ios", T0 + 10 * S, "d-ios"))
    case(
        "os_fallback_android",
        True,
        privacy("os_fallback_android", T0, "d-osf", os=None, **{"$os": "Android"}),
        restore("real-osf", T0 + 10 * S, "d-osf"),
    )
    case(
        "mp_os_wins_over_os",
        False,
        privacy("mp_os_wins_over_os", T0, "d-osw", os="iOS", **{"$os": "Android"}),
        restore("real-osw", T0 + 10 * S, "d-osw"),
    )
    case(
        "no_os_at_all",
        False,
        privacy("no_os_at_all", T0, "d-noos", os=None),
        restore("real-noos", T0 + 10 * S, "d-noos"),
    )
    case(
        "device_fallback",
        True,
        privacy("device_fallback", T0, None, device_id="d-fb"),
        restore("real-fb", T0 + 10 * S, None, device_id="d-fb"),
    )
    case(
        "device_fallback_when_empty",
        True,
        privacy("device_fallback_when_empty", T0, "", device_id="d-fbe"),
        restore("real-fbe", T0 + 10 * S, "d-fbe"),
    )
    case(
        "window_start",
        True,
        privacy("window_start", ts("2024-06-04T00:00:00"), "d-ws"),
        restore("real-ws", ts("2024-06-04T00:00:30"), "d-ws"),
    )
    case(
        "before_window",
        False,
        privacy("before_window", ts("2024-06-03T23:59:59"), "d-bw"),
        restore("real-bw", ts("2024-06-04T00:00:10"), "d-bw"),
    )
    case(
        "at_as_of",
        False,
        privacy("at_as_of", ts("2024-06-06T00:00:00"), "d-ao"),
        restore("real-ao", ts("2024-06-06T00:00:10"), "d-ao"),
    )
    case(
        "restore_after_as_of",
        True,
        privacy("restore_after_as_of", ts("2024-06-05T23:59:30"), "d-raa"),
        restore("real-raa", ts("2024-06-06T00:01:00"), "d-raa"),
    )
    case("", False, privacy("", T0, "d-empty-user"), restore("real-eu", T0 + 5 * S, "d-empty-user"))
    case("null_user", False, privacy(None, T0, "d-null-user"), restore("real-nu", T0 + 5 * S, "d-null-user"))
    case(
        "other_event_names",
        False,
        event("impression_other", "other_event_names", T0, **{"$device_id": "d-oe", "mp_os": "Android"}),
        restore("real-oe", T0 + 5 * S, "d-oe"),
    )
    case(
        "two_pairs",
        True,
        privacy("two_pairs", T0, "d-tp"),
        restore("real-tp", T0 + 30 * S, "d-tp"),
        privacy("two_pairs", T0 + 600 * S, "d-tp"),
        restore("real-tp", T0 + 630 * S, "d-tp"),
    )
    return rows, expected


def test_detection_boundaries(warehouse, local_mixpanel, local_slack):
    rows, expected = boundary_events()
    seed_events(warehouse, rows)

    result = materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)

    table = temp_users(warehouse)
    found = set(table["distinct_id"])
    assert found == expected, f"missing {expected - found}, unexpected {found - expected}"
    assert table["distinct_id"].is_unique
    by_id = table.set_index("distinct_id")
    # the extra columns come from the earliest qualifying pair
    assert by_id.loc["two_pairs", "privacy_event_at"] == T0
    assert by_id.loc["two_pairs", "restore_event_at"] == T0 + 30 * S
    assert by_id.loc["gap_120s", "device_id"] == "d-120"
    assert by_id.loc["device_fallback", "device_id"] == "d-fb"
    assert by_id.loc["restore_after_as_of", "restore_event_at"] == ts("2024-06-06T00:01:00")
    assert table["detected_at"].notna().all()
    assert table["mixpanel_synced_at"].isna().all()
    meta = metadata_of(result, TEMP_USERS_KEY)
    assert meta["inserted"] == len(expected)
    assert meta["detected"] == len(expected)
    assert meta["dagster/row_count"] == len(expected)


def test_known_user_not_inserted_twice(warehouse, local_mixpanel, local_slack):
    synced = ts("2024-06-02T11:00:00")
    seed_temp_users(warehouse, ["known"], synced_at=synced)
    seed_events(
        warehouse,
        [
            privacy("known", T0, "d-k"),
            restore("real-k", T0 + 5 * S, "d-k"),
            privacy("fresh", T0, "d-f"),
            restore("real-f", T0 + 5 * S, "d-f"),
        ],
    )
    result = materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)

    table = temp_users(warehouse)
    assert sorted(table["distinct_id"]) == ["fresh", "known"]
    known = table.set_index("distinct_id").loc["known"]
    assert known["mixpanel_synced_at"] == synced  # untouched
    assert known["detected_at"] == ts("2024-06-01T11:00:00")
    meta = metadata_of(result, TEMP_USERS_KEY)
    assert (meta["detected"], meta["inserted"], meta["already_known"]) == (2, 1, 1)


def test_overlapping_and_repeated_runs_never_duplicate(warehouse, local_mixpanel, local_slack):
    # pairs on three consecutive days: as_of a day apart overlap by one day (lookback 2)
    seed_events(
        warehouse,
        [
            privacy("day3", ts("2024-06-03T08:00:00"), "d3"),
            restore("r3", ts("2024-06-03T08:01:00"), "d3"),
            privacy("day4", ts("2024-06-04T08:00:00"), "d4"),
            restore("r4", ts("2024-06-04T08:01:00"), "d4"),
            privacy("day5", ts("2024-06-05T08:00:00"), "d5"),
            restore("r5", ts("2024-06-05T08:01:00"), "d5"),
        ],
    )
    first = materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of="2024-06-05T00:00:00Z")
    assert sorted(temp_users(warehouse)["distinct_id"]) == ["day3", "day4"]
    before = temp_users(warehouse).set_index("distinct_id")["detected_at"]

    second = materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of="2024-06-06T00:00:00Z")
    repeat = materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of="2024-06-06T00:00:00Z")

    table = temp_users(warehouse)
    assert sorted(table["distinct_id"]) == ["day3", "day4", "day5"]
    assert table["distinct_id"].is_unique
    after = table.set_index("distinct_id")["detected_at"]
    assert after["day4"] == before["day4"]  # the row from the first run is kept as it was
    assert metadata_of(first, TEMP_USERS_KEY)["inserted"] == 2
    assert metadata_of(second, TEMP_USERS_KEY)["inserted"] == 1
    assert metadata_of(second, TEMP_USERS_KEY)["already_known"] == 1
    assert metadata_of(repeat, TEMP_USERS_KEY)["inserted"] == 0


def test_rule_reads_properties_not_the_extra_columns(warehouse, local_mixpanel, local_slack):
    """A table with only the required columns (no event_date/device_id/os) gives the same result."""
    rows, expected = boundary_events()
    minimal = EVENTS_SCHEMA[:6]
    assert [c.name for c in minimal] == ["event_id", "event_name", "distinct_id", "event_timestamp", "inserted_at", "properties"]
    warehouse.load(pd.DataFrame(rows), EVENTS_DATASET, EVENTS_TABLE, minimal)

    materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)

    assert set(temp_users(warehouse)["distinct_id"]) == expected


def _stale(row: dict, loaded_at: dt.datetime) -> dict:
    return {**row, "inserted_at": loaded_at}


def test_ingestion_behind_as_of_fails_naming_the_last_loaded_time(warehouse, local_mixpanel, local_slack):
    """Issue 14.9: ingestion stopped at 2024-06-05T10:00 (rows written then, nothing later);
    a run as of 2024-06-06T00:00 would see no pair after 10:00 and report too few temp users:
    it fails instead, naming how far the table is loaded, and writes nothing."""
    stopped = ts("2024-06-05T10:00:05")
    seed_events(warehouse, [_stale(privacy("tmp", T0, "d-1"), stopped), _stale(restore("real", T0 + 5 * S, "d-1"), stopped)])
    result = materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.event_specific_data.error)
    assert "loaded up to 2024-06-05T10:00:05+00:00" in message and "before as_of 2024-06-06T00:00:00+00:00" in message
    assert not warehouse.table_exists(COHORT_DATASET, "state_loss_temp_users")  # nothing written


def test_ingestion_within_the_allowed_lag_runs(warehouse, local_mixpanel, local_slack):
    """Loaded 30 minutes before as_of (the 15-minute refresh between ticks): the run goes on."""
    loaded = ts("2024-06-05T23:30:00")
    seed_events(warehouse, [_stale(privacy("tmp", T0, "d-1"), loaded), _stale(restore("real", T0 + 5 * S, "d-1"), loaded)])
    materialize(warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)
    assert list(temp_users(warehouse)["distinct_id"]) == ["tmp"]


def test_an_empty_events_table_fails_rather_than_reporting_zero(duckdb_warehouse, local_mixpanel, local_slack):
    seed_events(duckdb_warehouse, [])
    result = materialize(duckdb_warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "nowhere (no event loaded since" in str(failure.event_specific_data.error)


def test_a_quiet_day_whose_refresh_ran_is_fresh(duckdb_warehouse, local_mixpanel, local_slack):
    """No row written since 10:00 (a quiet day), but the events partition of as_of's day was
    materialized after that (the 15-minute refresh ran): the detection runs."""
    stopped = ts("2024-06-05T10:00:05")
    seed_events(duckdb_warehouse, [_stale(privacy("tmp", T0, "d-1"), stopped), _stale(restore("real", T0 + 5 * S, "d-1"), stopped)])
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=EVENTS_KEY, partition="2024-06-05"))
        materialize(duckdb_warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF, instance=instance)
    assert list(temp_users(duckdb_warehouse)["distinct_id"]) == ["tmp"]
