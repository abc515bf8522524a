"""Acceptance 8: a simulated day of the two frequent schedules, back to back.

96 ticks of ``mixpanel_events_every_15_minutes`` and 288 of
``mixpanel_event_anomalies_every_5_minutes`` (D 00:05 .. D+1 00:00 UTC; at the same minute the
ingestion runs first).  Each tick is evaluated by the schedule's own request function
(``refresh_request`` / ``detect_request``) at its ``scheduled_execution_time`` (time travel:
partition and ``as_of`` come from the tick; its "previous run still going?" check reads the
same instance) and the run it requests is materialized in-process (``dg.materialize``, real resources on the
Mixpanel and Slack stubs over HTTP, DuckDB).  Events "arrive" in the export as time passes:
before an ingestion tick the stub starts serving the events that happened since the
previous one; a few ticks meet 429s.

Checked against a reference computed independently from the generated events (windows,
strict threshold, 5-minute cooldown): every anomalous window recorded (no missed window,
including the last ones of the day), one Slack message per alerted window (no duplicate),
every event of the day ingested once, and at most 60 export queries per simulated hour.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter, defaultdict
from types import SimpleNamespace

import dagster as dg
import duckdb

from analytics_platform.mixpanel import schedules as S
from analytics_platform.mixpanel.assets import event_anomalies, mixpanel_events
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource
from analytics_platform.resources.warehouse import DuckDBWarehouse
from analytics_platform_tests.reliability.helpers import event_rows, metadata

UTC = dt.timezone.utc
D = dt.date(2024, 6, 5)
START = dt.datetime(2024, 6, 5, tzinfo=UTC)
MAX_EXPORTS_PER_HOUR = 60
NPE, PURCHASE = "impression_error_null_pointer_detected", "purchase_failed"
MONITORED = {NPE: (5, 1, "#alerts-errors"), PURCHASE: (3, 5, "#alerts")}  # threshold, window, channel
COOLDOWN = dt.timedelta(minutes=5)
CONFIG = {"events": [{"name": "app_open", "enabled": True}] + [
    {"name": n, "enabled": True, "alert_threshold": t, "time_window_minutes": w, "alert_channel": c}
    for n, (t, w, c) in MONITORED.items()
]}
# (event, first second of the burst as "HH:MM:SS", events, spread in seconds)
BURSTS = [
    (NPE, "00:00:05", 7, 40),  # the day's first window
    (NPE, "03:10:00", 6, 50),
    (NPE, "03:11:00", 8, 50),  # 1 minute later: suppressed by the cooldown
    (NPE, "03:15:00", 6, 50),  # exactly 5 minutes later: alerted
    (NPE, "07:30:10", 5, 40),  # = threshold: not anomalous by itself
    (NPE, "12:44:00", 20, 55),
    (PURCHASE, "09:01:00", 4, 200),
    (PURCHASE, "17:20:30", 3, 200),
    (PURCHASE, "23:55:10", 5, 250),  # the last 5-minute window of the day
    (NPE, "23:58:00", 9, 50),  # the last minutes of the day: ingested after midnight
    (NPE, "23:59:00", 6, 50),
]
THROTTLED_TICKS = {"06:00", "13:45", "23:30"}  # the export answers 429 twice first


def _at(hhmmss: str) -> dt.datetime:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return START + dt.timedelta(hours=h, minutes=m, seconds=s)


def _events() -> list[dict]:
    """The day's events (background traffic + bursts), time in whole seconds."""
    rng = random.Random(9)
    out: list[tuple[str, dt.datetime]] = []
    for minute in range(24 * 60):
        t = START + dt.timedelta(minutes=minute)
        out.append(("app_open", t + dt.timedelta(seconds=rng.randrange(60))))
        if minute % 7 == 3:
            out.append((NPE, t + dt.timedelta(seconds=rng.randrange(60))))
        if minute % 11 == 5:
            out.append((PURCHASE, t + dt.timedelta(seconds=rng.randrange(60))))
    for name, first, count, spread in BURSTS:
        out += [(name, _at(first) + dt.timedelta(seconds=int(i * spread / count))) for i in range(count)]
    out.sort(key=lambda e: (e[1], e[0]))
    return [
        {"event": name, "properties": {"time": int(t.timestamp()), "distinct_id": f"u{i % 97}", "$insert_id": f"load-{i}", "$os": "Android"}}
        for i, (name, t) in enumerate(out)
    ]


def _reference(events: list[dict]) -> tuple[set, set]:
    """(alerted, suppressed) windows by the spec: count > T per epoch-aligned W-minute window,
    then per event in time order, alerted unless an alerted window started < C earlier."""
    counts: Counter = Counter()
    for e in events:
        name = e["event"]
        if name in MONITORED:
            w = MONITORED[name][1] * 60
            counts[(name, e["properties"]["time"] // w * w)] += 1
    alerted, suppressed = set(), set()
    last: dict[str, dt.datetime] = {}
    for (name, start), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if n <= MONITORED[name][0]:
            continue
        ts = dt.datetime.fromtimestamp(start, UTC)
        if name in last and ts - last[name] < COOLDOWN:
            suppressed.add((name, ts))
        else:
            alerted.add((name, ts))
            last[name] = ts
    return alerted, suppressed


def test_a_simulated_day_of_ingestion_and_detection_ticks(tmp_path, monkeypatch, mixpanel_stub, slack_stub):
    monkeypatch.setenv("EVENTS_CONFIG", json.dumps(CONFIG))
    events = _events()
    expected_alerted, expected_suppressed = _reference(events)
    assert len(expected_alerted) == 7 and len(expected_suppressed) == 2  # the plan exercises both

    path = str(tmp_path / "warehouse.duckdb")
    keep_open = duckdb.connect(path)  # keeps the database open between the runs' connections (speed only)
    warehouse = DuckDBWarehouse(path=path)
    mixpanel = MixpanelResource(**{**mixpanel_stub.resource_kwargs(), "backoff_initial_seconds": 0.01})
    slack = SlackResource(**slack_stub.resource_kwargs())
    ingest_resources = {"warehouse": warehouse, "mixpanel": mixpanel}
    detect_resources = {"warehouse": warehouse, "slack": slack}

    ticks = [(START + dt.timedelta(minutes=15 * k), "ingest") for k in range(1, 97)]
    ticks += [(START + dt.timedelta(minutes=5 * k), "detect") for k in range(1, 289)]
    ticks.sort(key=lambda t: (t[0], t[1] != "ingest"))
    served = 0
    exports_by_hour: Counter = Counter()
    partitions: Counter = Counter()
    runs = Counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # 384 runs: keep the output small
    instance = dg.DagsterInstance.ephemeral()
    for tick, kind in ticks:
        # what a schedule evaluation context gives the request functions: the tick and the
        # instance holding the runs (in memory: build_schedule_context only takes persistent
        # instances, whose sqlite storage makes each of the 384 runs 2-3x slower)
        context = SimpleNamespace(scheduled_execution_time=tick, instance=instance)
        if kind == "ingest":
            # what happened since the last tick is now in the export
            by_day = defaultdict(list)
            while served < len(events) and events[served]["properties"]["time"] < tick.timestamp():
                e = events[served]
                by_day[dt.datetime.fromtimestamp(e["properties"]["time"], UTC).date()].append(e)
                served += 1
            for day, batch in by_day.items():
                mixpanel_stub.add_events(day, batch)
            if f"{tick:%H:%M}" in THROTTLED_TICKS:
                mixpanel_stub.fail_export(429, times=2, retry_after=0)
            request = S.refresh_request(context)
            assert isinstance(request, dg.RunRequest), request
            before = len(mixpanel_stub.export_requests)
            result = dg.materialize(
                [mixpanel_events],
                partition_key=request.partition_key,
                tags=request.tags,
                run_config=quiet,
                resources=ingest_resources,
                instance=instance,
            )
            exports_by_hour[(tick - dt.timedelta(seconds=1)).replace(minute=0, second=0)] += (
                len(mixpanel_stub.export_requests) - before
            )
            for r in mixpanel_stub.export_requests[before:]:
                partitions[(r["params"]["from_date"], r["params"]["to_date"])] += 1
        else:
            request = S.detect_request(context)
            assert isinstance(request, dg.RunRequest), request
            result = dg.materialize(
                [event_anomalies], run_config={**request.run_config, **quiet}, resources=detect_resources, instance=instance
            )
            assert metadata(result, "mixpanel_data__event_anomalies")["as_of"] == tick.isoformat()
        assert result.success
        runs[kind] += 1
    keep_open.close()

    assert runs == {"ingest": 96, "detect": 288}
    # every event of the day is in the table, once
    day_events = [e for e in events if e["properties"]["time"] < (START + dt.timedelta(days=1)).timestamp()]
    rows = event_rows(warehouse, D.isoformat())
    assert len(rows) == len(day_events) and set(rows["event_id"]) == {e["properties"]["$insert_id"] for e in day_events}

    # no missed window, nothing recorded twice, the cooldown applied as specified
    table = warehouse.query(
        "SELECT event_name, window_start, alert_status FROM `mixpanel_data.event_anomalies` ORDER BY 1, 2"
    )
    recorded = [(n, s.to_pydatetime(), st) for n, s, st in zip(table["event_name"], table["window_start"], table["alert_status"])]
    assert len({(n, s) for n, s, _ in recorded}) == len(recorded)
    assert {(n, s) for n, s, st in recorded if st == "sent"} == expected_alerted
    assert {(n, s) for n, s, st in recorded if st == "suppressed"} == expected_suppressed

    # one Slack message per alerted window, in the event's channel
    assert len(slack_stub.messages) == len(expected_alerted)
    assert len({m["text"] for m in slack_stub.messages}) == len(expected_alerted)
    for name, (_, _, channel) in MONITORED.items():
        assert len(slack_stub.messages_in(channel)) == sum(1 for n, _ in expected_alerted if n == name)

    # Mixpanel's export limit: at most 60 queries per hour (retries of the 429s included)
    assert max(exports_by_hour.values()) <= MAX_EXPORTS_PER_HOUR
    assert sum(exports_by_hour.values()) == 96 + 2 * len(THROTTLED_TICKS)
    # the day boundary: the midnight tick also re-read the previous day (one query, one run)
    assert partitions[(D.isoformat(), (D + dt.timedelta(days=1)).isoformat())] == 1
