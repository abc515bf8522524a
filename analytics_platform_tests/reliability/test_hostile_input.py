"""Acceptance 6: hostile input.

* Event names, Slack channels, user ids and ``$insert_id`` s containing quotes, semicolons,
  backticks, newlines and unicode travel through ingestion, detection, alerts, signals,
  KPIs and session aggregation as plain values: bound parameters, never SQL text.  Each
  statement still does exactly its job (the rows it should touch, nothing else), and the
  values come back verbatim.
* Dataset/table names from the environment are identifiers: a hostile one fails the run
  with a clear validation error before any statement is sent.
* Property-based tests (hypothesis): the events-configuration loader (inline JSON, file
  bytes, arbitrary documents) and the Mixpanel export line parser never fail with anything
  but a clear validation error (``EventsConfigError``) / a counted, quarantined line.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import dagster as dg
import pytest
import sqlglot
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from analytics_platform.engagement import store
from analytics_platform.mixpanel.events_config import (
    EventsConfig,
    EventsConfigError,
    load_events_config,
    parse_events_config,
)
from analytics_platform.mixpanel.export_parse import REJECT_REASONS, ExportParser
from analytics_platform.mixpanel.store import rows_sql
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource
from analytics_platform.resources.warehouse import render_sql, validate_identifier
from analytics_platform_tests.engagement.conftest import FIT_APP, GOAL_FITNESS, EngagementDb
from analytics_platform_tests.engagement.conftest import materialize as materialize_engagement
from analytics_platform_tests.kpis.conftest import KpiDb
from analytics_platform_tests.kpis.helpers import materialize as materialize_kpi
from analytics_platform_tests.kpis.helpers import slack_outbox
from analytics_platform_tests.mixpanel.conftest import (
    anomaly_rows,
    materialize_anomalies,
    materialize_events,
    mp_event,
    ts,
)
from analytics_platform_tests.posthog import data as posthog_data
from analytics_platform_tests.reliability.helpers import event_rows

DAY = "2024-06-05"
HOSTILE = [
    "x'); DROP TABLE mixpanel_data.mixpanel_events; --",
    'q"uote"; DELETE FROM mixpanel_data.mixpanel_events WHERE TRUE; --',
    "back`tick`; SELECT 1; `mixpanel_data.event_anomalies`",
    "semi;colon OR 1=1",
    "ünïcødé 🚀 名前 \u202e",
    "back\\slash\\' --",
    "new\nline\r\ttab",
    "@date_from $1 ? %s :user_ids {dataset}",
]


# ------------------------------------------------------------------ values, end to end
def _config(names: list[str]) -> dict:
    return {
        "events": [
            {"name": n, "enabled": True, "alert_threshold": 2, "alert_channel": "#" + n.replace("\n", " "), "time_window_minutes": 1}
            for n in names
        ]
        + [{"name": "app_open", "enabled": True}]
    }


def test_hostile_event_names_ids_and_channels_are_values_end_to_end(warehouse, mixpanel_stub, slack_stub, monkeypatch):
    monkeypatch.setenv("EVENTS_CONFIG", json.dumps(_config(HOSTILE)))
    for n in HOSTILE:
        slack_stub.add_channel("#" + n.replace("\n", " "))
    expected_ids: dict[str, set[str]] = {}
    for k, name in enumerate(HOSTILE):
        events = [
            mp_event(name, ts(f"2024-06-05T10:01:{10 * i:02d}"), HOSTILE[(k + i) % len(HOSTILE)], f"{name}|{i}")
            for i in range(3)
        ]
        expected_ids[name] = {e["properties"]["$insert_id"] for e in events}
        mixpanel_stub.add_events(DAY, events)
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts("2024-06-05T09:00:00"), "canary", "canary-1")])
    mixpanel = MixpanelResource(**mixpanel_stub.resource_kwargs())

    assert materialize_events(warehouse, mixpanel, DAY).success
    rows = event_rows(warehouse, DAY)
    assert len(rows) == 3 * len(HOSTILE) + 1  # nothing dropped, nothing deleted
    for name, ids in expected_ids.items():
        assert set(rows.loc[rows["event_name"] == name, "event_id"]) == ids
    assert set(rows["distinct_id"]) == set(HOSTILE) | {"canary"}

    slack = SlackResource(**slack_stub.resource_kwargs())
    assert materialize_anomalies(warehouse, slack, "2024-06-05T10:05:00Z").success
    anomalies = anomaly_rows(warehouse)
    assert sorted(anomalies["event_name"]) == sorted(HOSTILE)
    assert set(anomalies["alert_status"]) == {"sent"}
    assert all(c == "#" + n.replace("\n", " ") for n, c in zip(anomalies["event_name"], anomalies["channel"]))
    assert len(slack_stub.messages) == len(HOSTILE)
    for name in HOSTILE:
        (message,) = slack_stub.messages_in("#" + name.replace("\n", " "))
        assert name in message["text"]
    # the events table and the other rows are intact after everything
    assert len(event_rows(warehouse, DAY)) == 3 * len(HOSTILE) + 1
    assert materialize_anomalies(warehouse, slack, "2024-06-05T10:05:00Z").success
    assert len(slack_stub.messages) == len(HOSTILE)


def test_the_alert_query_selects_exactly_the_window_whatever_the_event_name(warehouse):
    """The SQL an alert shows (for people to paste into BigQuery) holds the name as one
    escaped literal: one SELECT, one line, exactly the window's rows."""
    from analytics_platform_tests.mixpanel.conftest import seed_events_table

    start = ts("2024-06-05T10:01:00")
    records = [(n, start + dt.timedelta(seconds=5 * i)) for n in HOSTILE for i in range(3)]
    records += [(n, start + dt.timedelta(minutes=1, seconds=1)) for n in HOSTILE]  # next window
    seed_events_table(warehouse, records)
    for name in HOSTILE:
        sql = rows_sql("mixpanel_data", "mixpanel_events", name, start, start + dt.timedelta(minutes=1))
        assert not re.search(r"[\x00-\x1f]", sql)  # BigQuery ends a '...' literal at a raw newline
        trees = sqlglot.parse(sql, read="bigquery")
        assert len(trees) == 1 and isinstance(trees[0], exp.Select)
        found = warehouse.query(sql)
        assert len(found) == 3 and set(found["event_name"]) == {name}


def test_hostile_user_ids_in_signals_data_and_run_config(app_db_url, tmp_path):
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    app_db = AppDatabase(url=app_db_url)
    with app_db.begin() as conn:
        store.ensure_goal_tables(conn)
    db = EngagementDb(app_db, DuckDBWarehouse(path=str(tmp_path / "w.duckdb")))
    db.mirror.ensure()
    db.seed_world()
    end = dt.datetime(2024, 6, 6, tzinfo=dt.timezone.utc)
    users = HOSTILE + ["plain-user", "other, user"]
    for u in users:
        db.goal(u, GOAL_FITNESS, 1)
        db.events([{"user_id": u, "app_id": FIT_APP, "ts": end - dt.timedelta(days=d, hours=3), "fg": 90_000} for d in (1, 8, 15)])
    signals = [dg.AssetKey(["app_db", "user_engagement_signals"])]
    assert materialize_engagement(app_db, signals, DAY).success
    assert set(db.rows(store.SIGNALS_TABLE)) == set(users)

    # ad-hoc run for three hostile ids (and one that does not exist): only their rows are replaced
    chosen = [HOSTILE[0], HOSTILE[2], HOSTILE[6], "nobody'; --"]
    before = db.rows(store.SIGNALS_TABLE)
    result = materialize_engagement(
        app_db, signals, DAY, run_config={"ops": {"app_db__user_engagement_signals": {"config": {"user_ids": chosen}}}}
    )
    assert result.success
    after = db.rows(store.SIGNALS_TABLE)
    assert set(after) == set(users)
    for u in users:
        changed = after[u]["computed_at"] != before[u]["computed_at"]
        assert changed == (u in chosen)
    assert db.scalar("SELECT count(*) FROM user_goals") == len(users)  # goal tables untouched
    app_db.get_engine().dispose()


def test_hostile_user_ids_in_kpi_sources(app_db, app_db_url, tmp_path):
    kpi = KpiDb(app_db.get_engine(), app_db_url).create_sources()
    as_of = dt.datetime(2024, 6, 6, tzinfo=dt.timezone.utc)
    for i, u in enumerate(HOSTILE):
        kpi.exams(u, [50.0 + i, 60.0], as_of - dt.timedelta(days=10))
        kpi.goal(u, 80.0)
    kpi.exams("active-user", [70.0], as_of - dt.timedelta(days=1))
    result = materialize_kpi(app_db, slack_outbox(tmp_path), as_of=as_of.isoformat())
    assert result.success
    rows = kpi.table("weekly_kpi")
    assert sorted(r[0] for r in rows) == sorted(HOSTILE)
    assert all(set(json.loads(r[2]) if isinstance(r[2], str) else r[2]) == {"P", "S"} for r in rows)


def test_hostile_posthog_event_names_in_run_config(duckdb_warehouse):
    posthog_data.load_sources(duckdb_warehouse)
    name = HOSTILE[0]
    posthog_data.add_posthog_events(
        duckdb_warehouse,
        [posthog_data.ev(f"h{i}", name, f"2024-06-03 10:0{i}:30", "u1", "S1") for i in range(3)],
    )
    day = posthog_data.D.isoformat()
    result = posthog_data.materialize(duckdb_warehouse, partition=day, config={"event_created_event": name})
    assert result.success
    sessions = posthog_data.rows_by_id(posthog_data.read_sessions(duckdb_warehouse, posthog_data.D))
    assert sessions["S1"]["events_created_count"] == 3  # exactly the events named so
    assert sessions["S2"]["events_created_count"] == 0


# ------------------------------------------------------------------ identifiers
@pytest.mark.parametrize("variable", ["BIGQUERY_DATASET", "BIGQUERY_TABLE"])
@pytest.mark.parametrize("value", ["mixpanel_data; DROP TABLE mixpanel_data.mixpanel_events; --", "a`b", "x.y", "ünï", "a b"])
def test_hostile_dataset_names_fail_the_run_before_any_statement(duckdb_warehouse, mixpanel_stub, monkeypatch, variable, value):
    mixpanel_stub.add_events(DAY, [mp_event("app_open", ts("2024-06-05T09:00:00"), "u", "first")])
    mixpanel = MixpanelResource(**mixpanel_stub.resource_kwargs())
    assert materialize_events(duckdb_warehouse, mixpanel, DAY).success
    before = event_rows(duckdb_warehouse, DAY)
    tables_before = _tables(duckdb_warehouse)

    monkeypatch.setenv(variable, value)
    failed = materialize_events(duckdb_warehouse, mixpanel, DAY, raise_on_error=False)
    assert not failed.success
    error = failed.failure_data_for_node("mixpanel_data__mixpanel_events").error
    text = str(error.message) + str(error.cause.message if error.cause else "")
    assert "Invalid identifier" in text and value in text
    monkeypatch.delenv(variable)
    assert event_rows(duckdb_warehouse, DAY).equals(before)
    assert _tables(duckdb_warehouse) == tables_before


def _tables(warehouse) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute("SELECT schema_name, table_name, estimated_size FROM duckdb_tables() ORDER BY 1, 2").fetchall()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_identifiers_are_validated_or_refused(text):
    try:
        name = validate_identifier(text)
    except ValueError as exc:
        assert "Invalid identifier" in str(exc)
        with pytest.raises(ValueError):
            render_sql("SELECT * FROM `{dataset}.t`", dataset=text)
    else:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        assert render_sql("SELECT * FROM `{dataset}.t`", dataset=text) == f"SELECT * FROM `{text}.t`"


# ------------------------------------------------------------------ the events configuration
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
weird_text = st.sampled_from(HOSTILE + ["", " ", "#", "\ud800", "a\x00b", "#\ud83d"]) | st.text(max_size=20)
weird_number = st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.booleans() | st.none() | weird_text
entry = st.fixed_dictionaries(
    {},
    optional={
        "name": weird_text | json_value,
        "enabled": st.booleans() | json_value,
        "alert_threshold": weird_number,
        "alert_channel": weird_text.map(lambda t: "#" + t) | weird_text | json_value,
        "time_window_minutes": weird_number,
        "extra": json_value,
    },
)
document = json_value | st.fixed_dictionaries({"events": st.lists(entry | json_value, max_size=6)}, optional={"other": json_value})


def _check_loaded(config: EventsConfig) -> None:
    names = [e.name for e in config.events]
    assert len(names) == len(set(names))
    for e in config.events:
        assert isinstance(e.name, str) and e.name.strip()
        e.name.encode("utf-8")  # sendable to Mixpanel and storable
        assert e.alert_threshold is None or (type(e.alert_threshold) is int and 0 < e.alert_threshold < 2**63)
        assert type(e.time_window_minutes) is int and 0 < e.time_window_minutes <= 1440
        assert e.alert_channel is None or (e.alert_channel.startswith("#") and len(e.alert_channel) > 1)
        e.alert_channel is None or e.alert_channel.encode("utf-8")
    config.collected_event_names()


@settings(max_examples=400, deadline=None)
@given(document)
def test_config_documents_load_or_fail_with_a_validation_error(doc):
    try:
        config = parse_events_config(doc)
    except EventsConfigError as exc:
        assert str(exc)
    else:
        _check_loaded(config)
    try:
        text = json.dumps(doc)
    except (ValueError, UnicodeEncodeError):
        return
    try:
        _check_loaded(load_events_config(inline=text))
    except EventsConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | document.map(lambda d: json.dumps(d, ensure_ascii=False)))
def test_inline_config_text_loads_or_fails_with_a_validation_error(text):
    try:
        _check_loaded(load_events_config(inline=text))
    except EventsConfigError as exc:
        assert str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | document.map(lambda d: json.dumps(d).encode()))
def test_config_file_bytes_load_or_fail_with_a_validation_error(tmp_path, data):
    path = tmp_path / "events_config.json"
    path.write_bytes(data)
    try:
        _check_loaded(load_events_config(path=path))
    except EventsConfigError as exc:
        assert str(path) in str(exc)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"events": ' + "[" * 5000 + "]" * 5000 + "}", '{"events": [{"name": "a\\ud800b"}]}',
     '{"events": [{"name": "x", "alert_threshold": 99999999999999999999999}]}',
     '{"events": [{"name": "x", "time_window_minutes": 10000000000}]}'],
    ids=["deep_nesting", "deep_events", "lone_surrogate", "huge_threshold", "huge_window"],
)
def test_pathological_configs_are_validation_errors(text, tmp_path):
    with pytest.raises(EventsConfigError):
        load_events_config(inline=text)
    path = tmp_path / "events_config.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(EventsConfigError):
        load_events_config(path=path)


def test_unreadable_config_files_are_validation_errors(tmp_path):
    for bad in (tmp_path, ):  # a directory
        with pytest.raises(EventsConfigError, match="EVENTS_CONFIG_PATH"):
            load_events_config(path=bad)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"events": [{"name": "caf\xe9"}]}'.encode("latin-1"))
    with pytest.raises(EventsConfigError, match="UTF-8"):
        load_events_config(path=latin1)


# ------------------------------------------------------------------ the export line parser
mp_time = (
    st.integers(min_value=-(2**66), max_value=2**66)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1717581600, 1717581600123, 1717581600.5, 0, -1, 10**11, 10**14, "1717581600", "soon", None, True, [], {}])
)
mp_props = st.fixed_dictionaries(
    {},
    optional={
        "time": mp_time,
        "distinct_id": weird_text | json_value,
        "$insert_id": weird_text | json_value,
        "$device_id": weird_text | json_value,
        "mp_os": weird_text,
        "mp_processing_time_ms": weird_number,
        "nested": json_value,
    },
)
mp_record = st.fixed_dictionaries({}, optional={"event": weird_text | json_value, "properties": mp_props | json_value, "x": json_value})
# well-formed records with hostile contents (the values must survive, the line must load)
mp_good_record = st.fixed_dictionaries(
    {
        "event": weird_text.filter(lambda t: t.strip() != ""),
        "properties": st.fixed_dictionaries(
            {"time": st.integers(1, 10**11 - 1) | st.integers(10**11, 10**14 - 1) | st.floats(1, 10**10)},
            optional={"distinct_id": weird_text, "$insert_id": weird_text, "$os": weird_text, "big": st.integers(2**60, 2**80), "nested": json_value},
        ),
    }
)


def _dump(record, ascii_only: bool) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return b"{}"


mp_line = (
    st.tuples(mp_good_record, st.booleans()).map(lambda t: _dump(*t))
    | st.tuples(mp_record, st.booleans()).map(lambda t: _dump(*t))
    | json_value.map(lambda v: _dump(v, True))
    | st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))
    | st.sampled_from([b"", b"   ", b"\r", b"\t", b"\xff\xfe", b"{", b"null", b'{"event":"e","properties":{"time":1e999}}'])
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(mp_line, max_size=30), st.booleans())
def test_export_lines_load_or_are_quarantined_never_crash(tmp_path, lines, crlf):
    path = tmp_path / "export.jsonl"
    ending = b"\r\n" if crlf else b"\n"
    path.write_bytes(b"".join(line + ending for line in lines))
    valid = rejected = 0
    with ExportParser(batch_rows=7, block_bytes=256) as parser:
        for batch in parser.parse(path):
            events = batch.events.to_pylist()
            valid += len(events)
            for e in events:
                assert e["event_id"] and isinstance(e["event_name"], str) and e["event_name"]
                assert e["event_timestamp"] is not None and e["event_date"] == e["event_timestamp"].date()
                json.loads(e["properties"])
            for r in batch.rejected.to_pylist():
                assert r["reason"] in REJECT_REASONS and r["raw_line"] is not None
                rejected += 1
        stats = parser.stats
        duplicates = parser.duplicates_total()
    assert stats.lines + stats.blank_lines == len(lines)
    assert stats.valid + stats.rejected == stats.lines
    assert rejected == stats.rejected and valid == stats.valid - duplicates
    event(f"valid lines: {min(stats.valid, 3)}+, rejected: {min(stats.rejected, 3)}+")
