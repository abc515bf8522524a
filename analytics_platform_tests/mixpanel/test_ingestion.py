"""Acceptance 1, 2 and 6: ingestion against the Mixpanel stub, on DuckDB and on the
BigQuery emulator (the ``warehouse`` fixture runs every test on both)."""

from __future__ import annotations

import json

from analytics_platform_tests.mixpanel.conftest import (
    EVENTS_KEY,
    events_rows,
    line,
    materialize_events,
    metadata_of,
    mp_event,
    rejected_rows,
    ts,
)

DAY = "2024-06-05"
BIG = 9007199254740993  # 2**53 + 1: a double would round it


def test_duplicates_collapse_and_seconds_and_milliseconds_are_utc(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(
        DAY,
        [
            mp_event("app_open", ts("2024-06-05T10:00:00"), "u1", "dup-1"),
            mp_event("app_open", ts("2024-06-05T10:00:00"), "u1", "dup-1"),  # same $insert_id
            mp_event("app_open", ts("2024-06-05T10:00:00"), "u1", "dup-1", extra="x"),  # again
            mp_event("app_open", ts("2024-06-05T23:59:59.250"), "u2", "ms-1", ms=True),
            mp_event("app_open", ts("2024-06-05T00:00:01"), "u3", "sec-1"),
        ],
    )
    result = materialize_events(warehouse, mixpanel, DAY)
    rows = events_rows(warehouse)
    assert sorted(rows["event_id"]) == ["dup-1", "ms-1", "sec-1"]
    by_id = {r["event_id"]: r for r in rows.to_dict("records")}
    assert by_id["ms-1"]["event_timestamp"].to_pydatetime() == ts("2024-06-05T23:59:59.250")
    assert by_id["sec-1"]["event_timestamp"].to_pydatetime() == ts("2024-06-05T00:00:01")
    assert str(by_id["ms-1"]["event_date"]) == DAY
    meta = metadata_of(result, EVENTS_KEY)
    assert meta["duplicates_collapsed"] == 2
    assert meta["rows_inserted"] == 3
    assert meta["dagster/row_count"] == 3
    assert meta["export_requests"] == 1
    assert meta["dagster/table_name"] == "mixpanel_data.mixpanel_events"


def test_rerun_keeps_rows_and_inserted_at(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts(f"2024-06-05T0{i}:00:00"), f"u{i}", f"e{i}") for i in range(5)])
    materialize_events(warehouse, mixpanel, DAY)
    first = events_rows(warehouse)
    again = materialize_events(warehouse, mixpanel, DAY)
    second = events_rows(warehouse)
    assert len(second) == 5
    assert first.equals(second)  # same rows, same inserted_at
    meta = metadata_of(again, EVENTS_KEY)
    assert meta["rows_inserted"] == 0
    assert meta["rows_already_loaded"] == 5


def test_incremental_refresh_writes_only_new_rows(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts("2024-06-05T01:00:00"), "u1", "a1")])
    materialize_events(warehouse, mixpanel, DAY)
    before = events_rows(warehouse).set_index("event_id")["inserted_at"]
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts("2024-06-05T02:00:00"), "u2", "a2")])
    result = materialize_events(warehouse, mixpanel, DAY)
    after = events_rows(warehouse).set_index("event_id")["inserted_at"]
    assert list(after.index) == ["a1", "a2"]
    assert after["a1"] == before["a1"]
    assert after["a2"] > before["a1"]
    assert metadata_of(result, EVENTS_KEY)["rows_inserted"] == 1


def test_late_event_appears_after_late_sweep_without_duplicates(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events("2024-06-03", [mp_event("app_open", ts("2024-06-03T08:00:00"), "u1", "d3")])
    mixpanel_stub.add_events("2024-06-04", [mp_event("app_open", ts("2024-06-04T08:00:00"), "u1", "d4")])
    materialize_events(warehouse, mixpanel, partition_range=("2024-06-03", "2024-06-04"))
    # a mobile client sends an event of June 3rd two days late
    mixpanel_stub.add_events("2024-06-03", [mp_event("app_open", ts("2024-06-03T09:30:00"), "u9", "late-1")])
    assert "late-1" not in set(events_rows(warehouse)["event_id"])
    sweep = materialize_events(warehouse, mixpanel, partition_range=("2024-06-03", "2024-06-04"))
    rows = events_rows(warehouse)
    assert sorted(rows["event_id"]) == ["d3", "d4", "late-1"]
    assert rows["event_id"].is_unique
    meta = metadata_of(sweep, EVENTS_KEY)
    assert meta["rows_inserted"] == 1
    assert meta["export_requests"] == 1
    assert len(mixpanel_stub.export_requests) == 2
    params = mixpanel_stub.export_requests[-1]["params"]
    assert (params["from_date"], params["to_date"]) == ("2024-06-03", "2024-06-04")


def test_malformed_lines_are_quarantined_once_and_the_rest_loads(warehouse, mixpanel_stub, mixpanel):
    good = [line(mp_event("app_open", ts("2024-06-05T05:00:00"), "u1", "ok-1")),
            line(mp_event("app_open", ts("2024-06-05T06:00:00"), "u2", "ok-2"))]
    bad = [
        '{"event":"app_open","properties":{"time":1717',  # truncated
        "this is not json",
        '{"properties":{"time":1717574400,"distinct_id":"x"}}',  # no event
        '{"event":"app_open","properties":{"distinct_id":"x"}}',  # no time
        '{"event":"app_open","properties":{"time":"yesterday"}}',  # unusable time
        "[1,2,3]",
    ]
    mixpanel_stub.add_raw_lines(DAY, [good[0], *bad, good[1]])
    first = materialize_events(warehouse, mixpanel, DAY)
    assert sorted(events_rows(warehouse)["event_id"]) == ["ok-1", "ok-2"]
    rejected = rejected_rows(warehouse)
    assert sorted(rejected["raw_line"]) == sorted(bad)
    reasons = dict(zip(rejected["raw_line"], rejected["reason"]))
    assert reasons["this is not json"] == "invalid_json"
    assert reasons['{"event":"app_open","properties":{"distinct_id":"x"}}'] == "missing_time"
    assert reasons['{"properties":{"time":1717574400,"distinct_id":"x"}}'] == "missing_event"
    assert reasons['{"event":"app_open","properties":{"time":"yesterday"}}'] == "invalid_time"
    assert reasons["[1,2,3]"] == "not_an_object"
    assert {str(d) for d in rejected["partition_date"]} == {DAY}
    meta = metadata_of(first, EVENTS_KEY)
    assert meta["rows_rejected"] == len(bad)
    assert meta["rejected_rows_new"] == len(bad)
    assert meta["rows_inserted"] == 2
    assert meta["lines_fetched"] == len(bad) + 2
    # re-running the partition records nothing twice
    second = materialize_events(warehouse, mixpanel, DAY)
    assert len(rejected_rows(warehouse)) == len(bad)
    assert metadata_of(second, EVENTS_KEY)["rejected_rows_new"] == 0
    assert metadata_of(second, EVENTS_KEY)["rows_rejected"] == len(bad)


def test_properties_are_stored_as_received(warehouse, mixpanel_stub, mixpanel):
    props_text = (
        '{"time":1717581600,"distinct_id":"u\\u00e9","$insert_id":"p-1","name":"Zoë 🎉",'
        f'"nested":{{"a":[1,{{"b":null}}],"c":{{"d":"e"}}}},"big":{BIG},"neg":-{BIG},"f":1.5}}'
    )
    mixpanel_stub.add_raw_lines(DAY, ['{"event":"app_open","properties":' + props_text + "}"])
    materialize_events(warehouse, mixpanel, DAY)
    stored = warehouse.query("SELECT properties FROM `mixpanel_data.mixpanel_events` WHERE event_id = 'p-1'")["properties"].iloc[0]
    stored_text = stored if isinstance(stored, str) else json.dumps(stored)
    # Python's json keeps integers exact: the values are those received, big ints included
    assert json.loads(stored_text) == json.loads(props_text)
    assert json.loads(stored_text)["big"] == BIG
    if warehouse.engine == "duckdb":
        assert stored_text == props_text  # byte for byte: escapes and key order kept
    row = events_rows(warehouse).iloc[0]
    assert row["distinct_id"] == "ué"
    assert row["event_timestamp"].to_pydatetime() == ts("2024-06-05T10:00:00")


def test_disabled_events_are_not_collected_and_cohort_events_are(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(
        DAY,
        [
            mp_event("app_open", ts("2024-06-05T01:00:00"), "u1", "k1"),
            mp_event("disabled_event", ts("2024-06-05T01:00:00"), "u1", "k2"),
            mp_event("impression_privacy", ts("2024-06-05T01:00:00"), "u1", "k3"),
            mp_event("impression_restore_user_state_by_device_id", ts("2024-06-05T01:00:01"), "u1", "k4"),
        ],
    )
    materialize_events(warehouse, mixpanel, DAY)
    assert sorted(events_rows(warehouse)["event_id"]) == ["k1", "k3", "k4"]
    asked = json.loads(mixpanel_stub.export_requests[0]["params"]["event"])
    assert "disabled_event" not in asked
    assert {"impression_privacy", "impression_restore_user_state_by_device_id", "app_open"} <= set(asked)


def test_extra_columns(warehouse, mixpanel_stub, mixpanel):
    mixpanel_stub.add_events(
        DAY,
        [
            mp_event("app_open", ts("2024-06-05T03:00:00"), "u1", "c1", **{"$device_id": "dev-9", "$os": "iOS", "mp_processing_time_ms": 1717556400123}),
            mp_event("app_open", ts("2024-06-05T03:00:00"), "u2", "c2", mp_os="Android"),
        ],
    )
    materialize_events(warehouse, mixpanel, DAY)
    rows = {r["event_id"]: r for r in events_rows(warehouse).to_dict("records")}
    assert (rows["c1"]["device_id"], rows["c1"]["os"], rows["c1"]["mp_processing_time_ms"]) == ("dev-9", "iOS", 1717556400123)
    assert rows["c2"]["os"] == "Android"
    assert str(rows["c2"]["event_date"]) == DAY


def test_a_range_run_records_each_days_own_row_count(warehouse, mixpanel_stub, mixpanel):
    """Issue 14.8: one run over three days (one export query) materializes each day with its
    own dagster/row_count, not the range's total."""
    counts = {"2024-06-03": 2, "2024-06-04": 0, "2024-06-05": 5}
    for day, n in counts.items():
        mixpanel_stub.add_events(day, [mp_event("app_open", ts(f"{day}T10:00:{i:02d}"), f"u{i}", f"{day}-{i}") for i in range(n)])
    result = materialize_events(warehouse, mixpanel, partition_range=("2024-06-03", "2024-06-05"))
    per_day = {
        mat.partition: mat.metadata["dagster/row_count"].value
        for mat in result.asset_materializations_for_node("mixpanel_data__mixpanel_events")
    }
    assert per_day == counts
    assert len(mixpanel_stub.export_requests) == 1
