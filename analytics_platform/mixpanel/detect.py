"""Event-spike detection and alert delivery (no Dagster imports).

One run: count the examined windows in the warehouse (set-based SQL, one query per
(window, threshold) pair of the configuration), keep the windows not recorded yet, walk
the cooldown (:func:`anomalies.assign_statuses`, state read from the table), record the new
windows ('pending' or 'suppressed') with their samples, then deliver every 'pending' alert
of the table — new ones and those a previous run could not deliver, whatever their age —
and mark the delivered ones 'sent'.  Undelivered alerts stay 'pending' for the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pandas as pd

from analytics_platform.mixpanel import anomalies as A
from analytics_platform.mixpanel.events_config import EventConfig, EventsConfig
from analytics_platform.mixpanel.tables import (
    ANOMALIES_SCHEMA,
    ANOMALIES_TABLE,
    ensure_anomalies_table,
    ensure_events_table,
)

UTC = dt.timezone.utc
_log = logging.getLogger(__name__)


@dataclass
class DetectResult:
    events_monitored: int = 0
    windows_examined: int = 0
    anomalous_windows: int = 0  # anomalous windows in the lookback (recorded before or now)
    new_anomalies: int = 0
    alerts_suppressed: int = 0
    alerts_sent: int = 0
    alerts_pending: int = 0  # still undelivered after this run
    pending_retried: int = 0  # alerts from earlier runs this run tried to deliver
    delivery_errors: list = field(default_factory=list)
    table_rows: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "events_monitored": self.events_monitored,
            "windows_examined": self.windows_examined,
            "anomalous_windows": self.anomalous_windows,
            "new_anomalies": self.new_anomalies,
            "alerts_sent": self.alerts_sent,
            "alerts_suppressed": self.alerts_suppressed,
            "alerts_pending": self.alerts_pending,
            "pending_retried": self.pending_retried,
        }


def _ts(value: Any) -> dt.datetime:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").to_pydatetime()


def _groups(config: EventsConfig) -> dict[tuple[int, int], list[EventConfig]]:
    groups: dict[tuple[int, int], list[EventConfig]] = {}
    for event in config.monitored:
        groups.setdefault((event.time_window_minutes, event.alert_threshold), []).append(event)
    return groups


def detect_and_alert(
    *,
    warehouse: Any,
    slack: Any,
    config: EventsConfig,
    dataset: str,
    table: str,
    as_of: dt.datetime,
    lookback_minutes: int = 60,
    cooldown_minutes: int = 5,
    default_channel: str = "#data-alerts",
    link: Optional[str] = None,
    now: Optional[Callable[[], dt.datetime]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> DetectResult:
    say = log or _log.info
    clock = now or (lambda: dt.datetime.now(UTC))
    as_of = as_of.astimezone(UTC)
    result = DetectResult()
    ensure_anomalies_table(warehouse, dataset)
    # A detection tick that comes before the first ingestion finds no events, not no table.
    ensure_events_table(warehouse, dataset, table)
    groups = _groups(config)
    result.events_monitored = sum(len(v) for v in groups.values())
    by_name = {e.name: e for e in config.monitored}

    # 1. anomalous windows among the examined ones (counted in the warehouse)
    found: list[tuple[A.Candidate, A.WindowRange]] = []
    for (window_minutes, threshold), events in sorted(groups.items()):
        rng = A.examined_windows(as_of, window_minutes, lookback_minutes)
        result.windows_examined += rng.count * len(events)
        if rng.count == 0:
            continue
        rows = warehouse.run_file(
            "mixpanel/window_counts",
            {
                "events": sorted(e.name for e in events),
                "window_micros": window_minutes * 60_000_000,
                "threshold": int(threshold),
                "scan_start": rng.first_start,
                "scan_end": rng.end,
                "date_from": rng.first_start.date(),
                "date_to": (rng.end - dt.timedelta(microseconds=1)).date(),
            },
            dataset=dataset,
            table=table,
        )
        for name, start, count in zip(rows["event_name"], rows["window_start"], rows["event_count"]):
            found.append((A.Candidate(str(name), _ts(start), int(count)), rng))
    result.anomalous_windows = len(found)

    # 2. what is recorded already (at most once) and the cooldown state
    new: list[tuple[A.Candidate, A.WindowRange]] = []
    if found:
        earliest = min(c.window_start for c, _ in found)
        longest_cooldown = dt.timedelta(minutes=cooldown_minutes)
        history = warehouse.run_file(
            "mixpanel/anomaly_history",
            {"events": sorted({c.event_name for c, _ in found}), "since": earliest - longest_cooldown},
            dataset=dataset,
            anomalies=ANOMALIES_TABLE,
        )
        recorded = {(str(n), _ts(s)) for n, s in zip(history["event_name"], history["window_start"])}
        alerted: dict[str, list[dt.datetime]] = {}
        for n, s, status in zip(history["event_name"], history["window_start"], history["alert_status"]):
            if status in (A.STATUS_SENT, A.STATUS_PENDING):
                alerted.setdefault(str(n), []).append(_ts(s))
        new = [(c, r) for c, r in found if (c.event_name, c.window_start) not in recorded]
        statuses = A.assign_statuses([c for c, _ in new], alerted, cooldown_minutes)
    else:
        statuses = {}
    result.new_anomalies = len(new)

    # 3. samples of the windows to alert (one query per window size)
    to_alert = [(c, r) for c, r in new if statuses[(c.event_name, c.window_start)] == A.ALERT]
    samples: dict[tuple[str, dt.datetime], list[dict]] = {}
    by_size: dict[int, list[tuple[A.Candidate, A.WindowRange]]] = {}
    for c, r in to_alert:
        by_size.setdefault(r.window_minutes, []).append((c, r))
    for window_minutes, items in by_size.items():
        starts = sorted({c.window_start for c, _ in items})
        scan_start = starts[0]
        scan_end = starts[-1] + dt.timedelta(minutes=window_minutes)
        rows = warehouse.run_file(
            "mixpanel/window_samples",
            {
                "events": sorted({c.event_name for c, _ in items}),
                "window_micros": window_minutes * 60_000_000,
                "window_starts": starts,
                "scan_start": scan_start,
                "scan_end": scan_end,
                "date_from": scan_start.date(),
                "date_to": (scan_end - dt.timedelta(microseconds=1)).date(),
                "per_window": A.MAX_SAMPLES,
            },
            dataset=dataset,
            table=table,
        )
        for rec in rows.to_dict("records"):
            key = (str(rec["event_name"]), _ts(rec["window_start"]))
            props = rec["properties"]
            if props is not None and not isinstance(props, str):
                props = json.dumps(props)
            samples.setdefault(key, []).append(
                A.summarise_sample(rec["distinct_id"], _ts(rec["event_timestamp"]), props)
            )

    # 4. record the new windows (insert_missing: a window is recorded at most once)
    detected_at = clock()
    if new:
        records = []
        for c, r in new:
            cfg = by_name.get(c.event_name)
            status = statuses[(c.event_name, c.window_start)]
            records.append(
                {
                    "event_name": c.event_name,
                    "window_start": c.window_start,
                    "window_end": c.window_start + dt.timedelta(minutes=r.window_minutes),
                    "window_minutes": r.window_minutes,
                    "event_count": c.event_count,
                    "threshold": int(cfg.alert_threshold) if cfg else None,
                    "channel": (cfg.alert_channel if cfg and cfg.alert_channel else default_channel),
                    "detected_at": detected_at,
                    "alert_status": A.STATUS_PENDING if status == A.ALERT else A.STATUS_SUPPRESSED,
                    "alerted_at": None,
                    "sample": json.dumps(samples.get((c.event_name, c.window_start), []), ensure_ascii=False)
                    if status == A.ALERT
                    else None,
                    "delivery_attempts": 0,
                    "last_error": None,
                }
            )
        starts = [r["window_start"] for r in records]
        warehouse.load(
            pd.DataFrame.from_records(records),
            dataset,
            ANOMALIES_TABLE,
            ANOMALIES_SCHEMA,
            mode="insert_missing",
            key_columns=("event_name", "window_start"),
            match_filter="T.window_start BETWEEN @match_from AND @match_to",
            match_params={"match_from": min(starts), "match_to": max(starts)},
        )
        result.alerts_suppressed = sum(1 for r in records if r["alert_status"] == A.STATUS_SUPPRESSED)
    new_keys = {(c.event_name, c.window_start) for c, _ in to_alert}

    # 5. deliver every pending alert (new and earlier ones), one message per window
    pending = warehouse.run_file("mixpanel/pending_alerts", {}, dataset=dataset, anomalies=ANOMALIES_TABLE)
    updates = []
    for rec in pending.to_dict("records"):
        start = _ts(rec["window_start"])
        key = (str(rec["event_name"]), start)
        if key not in new_keys:
            result.pending_retried += 1
        minutes = int(rec["window_minutes"])
        try:
            sample = json.loads(rec["sample"]) if isinstance(rec["sample"], str) else (rec["sample"] or [])
        except ValueError:
            sample = []
        content = A.AlertContent(
            event_name=key[0],
            window_start=start,
            window_minutes=minutes,
            event_count=int(rec["event_count"]),
            threshold=int(rec["threshold"]) if pd.notna(rec["threshold"]) else 0,
            samples=sample,
            link=link,
            rows_sql=A.rows_sql(dataset, table, key[0], start, start + dt.timedelta(minutes=minutes)),
        )
        text, blocks = A.build_alert(content)
        delivery = slack.post_message(text, blocks=blocks, channel=rec["channel"] or default_channel)
        attempts = (int(rec["delivery_attempts"]) if pd.notna(rec["delivery_attempts"]) else 0) + 1
        row = dict(rec)
        row.update(
            window_start=start,
            window_end=_ts(rec["window_end"]) if pd.notna(rec["window_end"]) else start + dt.timedelta(minutes=minutes),
            detected_at=_ts(rec["detected_at"]) if pd.notna(rec["detected_at"]) else detected_at,
            delivery_attempts=attempts,
            sample=json.dumps(sample, ensure_ascii=False),
        )
        if delivery.delivered:
            row.update(alert_status=A.STATUS_SENT, alerted_at=clock(), last_error=None)
            result.alerts_sent += 1
            say(f"alert sent: {key[0]} {start:%Y-%m-%d %H:%M} UTC to {delivery.destination}")
        else:
            row.update(alert_status=A.STATUS_PENDING, alerted_at=None, last_error=str(delivery.error)[:500])
            result.alerts_pending += 1
            result.delivery_errors.append(f"{key[0]} {start:%Y-%m-%d %H:%M}: {delivery.error}")
            say(f"alert NOT delivered (stays pending): {key[0]} {start:%Y-%m-%d %H:%M} UTC: {delivery.error}")
        updates.append(row)
    if updates:
        starts = [r["window_start"] for r in updates]
        warehouse.load(
            pd.DataFrame.from_records(updates),
            dataset,
            ANOMALIES_TABLE,
            ANOMALIES_SCHEMA,
            mode="merge",
            key_columns=("event_name", "window_start"),
            preserve_on_update=("detected_at",),
            match_filter="T.window_start BETWEEN @match_from AND @match_to",
            match_params={"match_from": min(starts), "match_to": max(starts)},
        )
    counts = warehouse.run_file("mixpanel/table_row_count", {}, dataset=dataset, table=ANOMALIES_TABLE)
    result.table_rows = int(counts["n"].iloc[0])
    return result
