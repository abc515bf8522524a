"""The events configuration: validation messages name the entry; inline JSON wins."""

from __future__ import annotations

import json

import pytest

from analytics_platform.mixpanel.events_config import (
    ALWAYS_COLLECTED,
    EventsConfigError,
    load_events_config,
    parse_events_config,
)
from analytics_platform.settings import get_settings
from analytics_platform.mixpanel.events_config import events_config_from_settings


def entry(**kw):
    base = {"name": "e1", "enabled": True, "alert_threshold": 5, "alert_channel": "#c", "time_window_minutes": 1}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "bad, message",
    [
        (entry(alert_thresold=3), "events[0] ('e1'): unknown key(s) ['alert_thresold']"),
        (entry(alert_threshold=0), "events[0] ('e1'): 'alert_threshold' must be a positive integer, got 0"),
        (entry(alert_threshold=-2), "'alert_threshold' must be a positive integer, got -2"),
        (entry(alert_threshold=2.5), "'alert_threshold' must be a positive integer"),
        (entry(time_window_minutes=0), "events[0] ('e1'): 'time_window_minutes' must be a positive integer, got 0"),
        (entry(alert_channel="alerts"), "events[0] ('e1'): 'alert_channel' must be a channel name starting with '#'"),
        (entry(enabled="yes"), "'enabled' must be true or false"),
        ({"enabled": True}, "events[0]: missing 'name'"),
    ],
)
def test_invalid_entries_are_reported_with_their_name(bad, message):
    with pytest.raises(EventsConfigError) as err:
        parse_events_config({"events": [bad]}, source="cfg.json")
    assert message in str(err.value)
    assert "cfg.json" in str(err.value)


def test_duplicate_names_and_every_problem_at_once():
    doc = {"events": [entry(), entry(alert_channel="nope"), entry(name="e2", time_window_minutes=-1)], "extra": 1}
    with pytest.raises(EventsConfigError) as err:
        parse_events_config(doc)
    text = str(err.value)
    assert "events[1] ('e1'): duplicate name (also events[0])" in text
    assert "events[1] ('e1'): 'alert_channel'" in text
    assert "events[2] ('e2'): 'time_window_minutes'" in text
    assert "unknown top-level key(s) ['extra']" in text


def test_collected_events_are_enabled_ones_plus_the_cohort_events():
    cfg = parse_events_config({"events": [entry(), entry(name="off", enabled=False), {"name": "plain"}]})
    assert cfg.collected_event_names() == sorted({"e1", "plain", *ALWAYS_COLLECTED})
    assert [e.name for e in cfg.monitored] == ["e1"]  # 'plain' has no threshold: collected only


def test_inline_config_wins_over_the_file(tmp_path, monkeypatch):
    path = tmp_path / "events.json"
    path.write_text(json.dumps({"events": [entry(name="from_file")]}))
    monkeypatch.setenv("EVENTS_CONFIG_PATH", str(path))
    monkeypatch.setenv("EVENTS_CONFIG", json.dumps({"events": [entry(name="inline")]}))
    assert [e.name for e in events_config_from_settings(get_settings()).events] == ["inline"]
    monkeypatch.delenv("EVENTS_CONFIG")
    assert [e.name for e in events_config_from_settings(get_settings()).events] == ["from_file"]


def test_missing_or_broken_files_name_the_variable(tmp_path):
    with pytest.raises(EventsConfigError, match="EVENTS_CONFIG_PATH"):
        load_events_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EventsConfigError, match="EVENTS_CONFIG_PATH"):
        load_events_config(broken)
    with pytest.raises(EventsConfigError, match="EVENTS_CONFIG is not valid JSON"):
        load_events_config(None, inline="{nope")


def test_the_repository_config_is_valid():
    cfg = load_events_config("config/events_config.json")
    npe = next(e for e in cfg.events if e.name == "impression_error_null_pointer_detected")
    assert (npe.alert_threshold, npe.alert_channel, npe.time_window_minutes) == (5, "#alerts-errors", 1)


def test_an_invalid_config_fails_the_ingestion_run_with_the_message(duckdb_warehouse, mixpanel, monkeypatch):
    from analytics_platform_tests.mixpanel.conftest import materialize_events

    monkeypatch.setenv("EVENTS_CONFIG", json.dumps({"events": [entry(alert_channel="no-hash")]}))
    result = materialize_events(duckdb_warehouse, mixpanel, "2024-06-05", raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("mixpanel_data__mixpanel_events")
    assert "events[0] ('e1')" in failure.user_failure_data.description
