"""Acceptance 3 (bad documents skipped and counted, the run succeeds) and 4 (a second
extraction reads only the documents added since the first, and the results equal a full
re-read), against the real Firestore emulator and PostgreSQL, through Dagster."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from analytics_platform.engagement.assets import (
    EXTRACT_OP,
    EXTRACTED_EVENTS_KEY,
    MILESTONES_KEY,
    SIGNALS_KEY,
)
from analytics_platform.engagement.store import EVENTS_TABLE, MILESTONES_TABLE, REJECTS_TABLE, SIGNALS_TABLE  # noqa: F401
from analytics_platform_tests.engagement.conftest import (
    FIT_APP,
    GOAL_FITNESS,
    GOAL_SLEEP,
    SLEEP_APP,
    T,
    WEEK,
    check_results,
    emulator_resource,
    materialization_metadata,
    materialize,
)

HOUR = WEEK / 168


def _doc(user, event, ts, app=FIT_APP, fg=1000, session="s1", **extra):
    fields = {"app_id": app, "foreground_time_ms": fg, "session_id": session, "timestamp": ts}
    fields.update(extra)
    return {"path": f"app_usage_events/{user}/events/{event}", "fields": fields}


def _extract(app_db, fs, **config):
    """Extract with the given run config; without a re-read window unless one is given (these
    tests check the cursor itself)."""
    config.setdefault("reread_window_hours", 0)
    result = materialize(
        app_db, [EXTRACTED_EVENTS_KEY], partition=None, firestore=fs,
        run_config={"ops": {EXTRACT_OP: {"config": config}}},
    )
    return materialization_metadata(result, EXTRACTED_EVENTS_KEY), result


def _events_table(world) -> dict[str, tuple]:
    """The warehouse mirror: document_path -> (user_id, event_id, app_id, foreground_time_ms,
    session_id, event_timestamp)."""
    frame = world.mirror_table(EVENTS_TABLE)
    return {
        r["document_path"]: (r["user_id"], r["event_id"], r["app_id"], int(r["foreground_time_ms"]),
                             r["session_id"], r["event_timestamp"].to_pydatetime())
        for r in frame.to_dict("records")
    }


def _strip(rows):
    return {u: {k: v for k, v in r.items() if k != "computed_at"} for u, r in rows.items()}


@pytest.fixture
def fs(firestore_emulator, firestore_project):
    return emulator_resource(firestore_emulator, firestore_project)


def test_bad_documents_are_skipped_counted_and_quarantined(world, fs):
    good = [_doc("u1", f"g{i}", T - (i + 1) * HOUR) for i in range(3)]
    bad = [
        {"path": "app_usage_events/u1/events/no_app", "fields": {"foreground_time_ms": 5, "session_id": "s", "timestamp": T - HOUR}},
        _doc("u1", "fg_string", T - HOUR, fg="1200"),
        _doc("u1", "fg_negative", T - HOUR, fg=-1),
        _doc("u1", "fg_fraction", T - HOUR, fg=12.5),
        _doc("u1", "fg_bool", T - HOUR, fg=True),
        _doc("u2", "session_missing", T - HOUR, session=None),
        _doc("u2", "app_number", T - HOUR, app=42),
    ]
    untimed = [
        _doc("u2", "ts_string", "2024-06-05T10:00:00Z"),
        {"path": "app_usage_events/u2/events/ts_missing", "fields": {"app_id": FIT_APP, "foreground_time_ms": 1, "session_id": "s"}},
    ]
    elsewhere = [_doc("u3", "other_root", T - HOUR) | {"path": "archive/u3/events/old"}]
    fs.write_documents(good + bad + untimed + elsewhere + [_doc("u1", "fg_float_ok", T - HOUR, fg=1500.0)])

    meta, result = _extract(world.app_db, fs)
    assert result.success
    assert meta["documents_read"] == len(good) + len(bad) + len(elsewhere) + 1
    assert meta["inserted"] == len(good) + 1
    assert meta["rejected"] == len(bad)
    assert meta["out_of_scope"] == 1
    assert meta["without_valid_timestamp"] == len(untimed)
    assert meta["dagster/row_count"] == len(good) + 1
    check = check_results(result)[("engagement/firestore_app_usage_events", "documents_valid")]
    assert not check.passed and check.severity.value == "WARN"

    events = _events_table(world)
    assert set(events) == {d["path"] for d in good} | {"app_usage_events/u1/events/fg_float_ok"}
    assert events["app_usage_events/u1/events/fg_float_ok"][3] == 1500

    rejects = {
        r["document_path"]: (r["reasons"], json.loads(r["raw_fields"]))
        for r in world.mirror_table(REJECTS_TABLE).to_dict("records")
    }
    assert set(rejects) == {d["path"] for d in bad}
    assert "app_id is missing" in rejects["app_usage_events/u1/events/no_app"][0]
    assert "foreground_time_ms has type str" in rejects["app_usage_events/u1/events/fg_string"][0]
    assert "negative" in rejects["app_usage_events/u1/events/fg_negative"][0]
    assert "boolean" in rejects["app_usage_events/u1/events/fg_bool"][0]
    assert "session_id is missing" in rejects["app_usage_events/u2/events/session_missing"][0]
    assert rejects["app_usage_events/u1/events/fg_string"][1]["foreground_time_ms"] == "1200"

    # fixing a rejected document in Firestore does not re-read it incrementally (same
    # timestamp, already behind the cursor) but a full refresh picks it up and un-quarantines it
    fs.write_documents([_doc("u1", "fg_string", T - HOUR, fg=1200)])
    meta, _ = _extract(world.app_db, fs)
    assert meta["documents_read"] == 0
    meta, _ = _extract(world.app_db, fs, full_refresh=True)
    assert meta["inserted"] == 1 and meta["rejected"] == len(bad) - 1 and meta["unchanged"] == len(good) + 1
    assert "app_usage_events/u1/events/fg_string" in _events_table(world)
    assert len(world.mirror_table(REJECTS_TABLE)) == len(bad) - 1


def test_second_run_reads_only_new_documents_and_equals_a_full_reread(world, fs):
    world.goal("alice", GOAL_FITNESS, tier=1)
    world.goal("bob", GOAL_FITNESS, tier=1)
    world.goal("bob", GOAL_SLEEP, tier=2)
    first = [_doc("alice", f"a{k}", T - k * WEEK - HOUR, fg=70_000, session=f"a{k}") for k in range(1, 4)]
    first += [_doc("bob", f"b{k}", T - k * WEEK - 2 * HOUR, app=SLEEP_APP, fg=100) for k in range(0, 9)]
    # several documents share the last timestamp of the first batch
    tie = T - 1.5 * HOUR  # the latest timestamp of the first batch
    first += [_doc("carol", f"c{i}", tie, fg=10) for i in range(3)]
    fs.write_documents(first)

    meta1, _ = _extract(world.app_db, fs, page_size=4)
    assert meta1["documents_read"] == len(first) == meta1["inserted"]
    assert meta1["pages"] == 4

    second = [_doc("alice", "a0", T - HOUR, fg=70_000, session="a0")]  # alice now active in week 0
    second += [_doc("dave", f"d{i}", T - HOUR + dt.timedelta(minutes=i), fg=5) for i in range(4)]
    second += [_doc("carol", "c9", tie, fg=10)]  # same timestamp as the cursor, path after it
    fs.write_documents(second)
    meta2, _ = _extract(world.app_db, fs, page_size=4)
    assert meta2["documents_read"] == len(second) == meta2["inserted"]
    meta3, _ = _extract(world.app_db, fs)
    assert meta3["documents_read"] == 0

    incremental_events = _events_table(world)
    assert len(incremental_events) == len(first) + len(second)
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    incremental_signals, incremental_milestones = world.rows(SIGNALS_TABLE), world.rows(MILESTONES_TABLE)
    assert incremental_signals["alice"]["customer_app_engaged"] is True  # needs the second batch
    assert incremental_signals["dave"]["event_count"] == 4

    # a full re-read into an emptied store gives the same table and the same results
    world.run("TRUNCATE user_engagement_signals, user_milestones")
    world.warehouse.execute(f"DELETE FROM `engagement.{EVENTS_TABLE}` WHERE TRUE")
    meta_full, _ = _extract(world.app_db, fs, full_refresh=True, page_size=3)
    assert meta_full["documents_read"] == len(first) + len(second)
    assert _events_table(world) == incremental_events
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    assert _strip(world.rows(SIGNALS_TABLE)) == _strip(incremental_signals)
    assert _strip(world.rows(MILESTONES_TABLE)) == _strip(incremental_milestones)

    # the cursor accumulated the documents read
    total = world.mirror.read_cursor(fs.source_name).documents_read_total
    assert total == len(first) + len(second) + meta_full["documents_read"]


def test_interrupted_extraction_resumes_without_rereading(world, fs):
    docs = [_doc(f"u{i % 4}", f"e{i:03d}", T - dt.timedelta(minutes=i % 5)) for i in range(23)]
    fs.write_documents(docs)
    read = []
    for _ in range(4):  # runs capped at 7 documents each: 7 + 7 + 7 + 2
        meta, _ = _extract(world.app_db, fs, page_size=3, max_documents=7)
        read.append(meta["documents_read"])
    assert read == [7, 7, 7, 2]
    assert set(_events_table(world)) == {d["path"] for d in docs}


def test_overlap_rereads_late_events_without_duplicates(world, fs):
    fs.write_documents([_doc("u1", "e1", T - HOUR), _doc("u1", "e2", T - HOUR / 2)])
    _extract(world.app_db, fs)
    # a late event arrives with a timestamp before the cursor
    fs.write_documents([_doc("u1", "late", T - HOUR * 0.75)])
    meta, _ = _extract(world.app_db, fs)
    assert meta["documents_read"] == 0  # behind the cursor: missed without an overlap
    meta, _ = _extract(world.app_db, fs, reread_window_hours=1)
    assert meta["documents_read"] == 3 and meta["inserted"] == 1 and meta["unchanged"] == 2
    assert len(_events_table(world)) == 3


def test_local_export_extraction(world, tmp_path):
    from analytics_platform.resources.local.firestore_export import LocalFirestore, write_local_export

    path = tmp_path / "events.jsonl"
    write_local_export(path, [_doc("u1", "e1", T - HOUR), _doc("u1", "e2", T - 2 * HOUR, fg="x")])
    fs = LocalFirestore(local_export_path=str(path))
    meta, _ = _extract(world.app_db, fs)
    assert (meta["documents_read"], meta["inserted"], meta["rejected"]) == (2, 1, 1)
    write_local_export(path, [_doc("u2", "e3", T - HOUR / 2)], append=True)
    meta, _ = _extract(world.app_db, fs)
    assert meta["documents_read"] == 1
    assert json.loads(path.read_text().splitlines()[0])["fields"]["timestamp"].endswith("Z")
