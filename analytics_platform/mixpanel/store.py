"""SQL I/O and the work of the mixpanel assets (no Dagster imports).

* :func:`refresh_event_days` — ``mixpanel_events``: the run's days, one export request per
  contiguous range, loaded by :func:`ingest.ingest_ranges` (insert-absent on ``event_id``).
* :func:`detect_event_anomalies` — ``event_anomalies``: one detection run
  (:func:`detect_and_alert`).

One detection run: count the examined windows in the warehouse (set-based SQL, one query
per (window, threshold) pair of the configuration), keep the windows not recorded yet, walk
the cooldown (:func:`rules.assign_statuses`, state read from the table), record the new
windows ('pending' or 'suppressed') with their samples, then deliver every 'pending' alert
of the table — new ones and those a previous run could not deliver, whatever their age —
and mark the delivered ones 'sent'.  Undelivered alerts stay 'pending' for the next run.
The rules themselves (windows, cooldown, rows and messages) are in :mod:`rules`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import pandas as pd

from analytics_platform.common import (
    UTC,
    contiguous_day_ranges,
    read_sql,
    render_sql,
    strip_sql_comments,
    to_int,
    utc_now,
)
from analytics_platform.mixpanel import rules as R
from analytics_platform.mixpanel.events_config import EventsConfig, events_config_from_settings
from analytics_platform.mixpanel.ingest import IngestResult, ingest_ranges
from analytics_platform.mixpanel.tables import (
    ANOMALIES_SCHEMA,
    ANOMALIES_TABLE,
    ensure_anomalies_table,
    ensure_events_table,
)

_log = logging.getLogger(__name__)
Log = Callable[[str], None]

# The target rows an anomalies load may match: the batch's window starts (prunes the scan).
MATCH_WINDOW_STARTS = strip_sql_comments(read_sql("mixpanel/match_window_starts")).strip()


# --------------------------------------------------------------------------- events
@dataclass
class EventDaysResult:
    """What a ``mixpanel_events`` run loaded (the ingestion counts and the partitions)."""

    ingest: IngestResult
    partition_keys: list[str]
    events: list[str]
    table: str  # dataset.table

    def metadata(self) -> dict[str, Any]:
        rows = sum(self.ingest.partition_rows.get(k, 0) for k in self.partition_keys)
        return {
            "dagster/row_count": rows,
            **self.ingest.metadata(),
            "collected_events": list(self.events),
            "partition_rows": dict(self.ingest.partition_rows),
            "table": self.table,
        }


def refresh_event_days(
    *,
    warehouse: Any,
    mixpanel: Any,
    settings: Any,
    partition_keys: Sequence[str],
    log: Optional[Log] = None,
    warn: Optional[Log] = None,
) -> EventDaysResult:
    """Fetch and load the collected events of the given days (one export request per
    contiguous range).  Raises ``EventsConfigError`` / ``MixpanelError`` (messages safe to
    show)."""
    say = log or _log.info
    config = events_config_from_settings(settings)
    keys = list(partition_keys)
    ranges = contiguous_day_ranges(keys)
    events = config.collected_event_names()
    dataset, table = settings.bigquery_dataset, settings.bigquery_table
    say(f"Fetching {len(keys)} day(s) in {len(ranges)} export request(s) for {len(events)} event(s)")
    result = ingest_ranges(
        warehouse=warehouse,
        mixpanel=mixpanel,
        dataset=dataset,
        table=table,
        ranges=ranges,
        events=events,
        now=utc_now(),
        log=say,
    )
    if result.rows_rejected:
        (warn or _log.warning)(
            f"{result.rows_rejected} malformed line(s) quarantined in "
            f"{dataset}.mixpanel_events_rejected: {result.rejected_by_reason}"
        )
    return EventDaysResult(ingest=result, partition_keys=keys, events=events, table=f"{dataset}.{table}")


# --------------------------------------------------------------------------- anomalies
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
    # the run's parameters, reported with the counts
    as_of: Optional[dt.datetime] = None
    lookback_minutes: int = 0
    cooldown_minutes: int = 0
    table: str = ""  # dataset.event_anomalies

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.table_rows,
            "events_monitored": self.events_monitored,
            "windows_examined": self.windows_examined,
            "anomalous_windows": self.anomalous_windows,
            "new_anomalies": self.new_anomalies,
            "alerts_sent": self.alerts_sent,
            "alerts_suppressed": self.alerts_suppressed,
            "alerts_pending": self.alerts_pending,
            "pending_retried": self.pending_retried,
            "as_of": self.as_of.isoformat() if self.as_of else "",
            "lookback_minutes": self.lookback_minutes,
            "cooldown_minutes": self.cooldown_minutes,
            "table": self.table,
        }


def bigquery_console_project(settings: Any) -> Optional[str]:
    """The GCP project whose BigQuery console shows the tables, or None.

    The warehouse is BigQuery exactly when ``ANALYTICS_ENV=prod`` (the choice
    ``resources.build_warehouse`` makes from the same settings); elsewhere (local DuckDB)
    alerts link to the Dagster UI instead.
    """
    return settings.gcp_project_id if settings.is_prod else None


def detect_event_anomalies(
    *,
    warehouse: Any,
    slack: Any,
    settings: Any,
    as_of: dt.datetime,
    lookback_minutes: int,
    cooldown_minutes: int,
    log: Optional[Log] = None,
    warn: Optional[Log] = None,
) -> DetectResult:
    """One detection run with the settings' events configuration, dataset, tables and
    Slack default channel.  Raises ``EventsConfigError`` (message safe to show)."""
    config = events_config_from_settings(settings)
    link = R.warehouse_link(
        bigquery_project=bigquery_console_project(settings),
        dataset=settings.bigquery_dataset,
        table=settings.bigquery_table,
        webserver_url=settings.dagster_webserver_url,
    )
    result = detect_and_alert(
        warehouse=warehouse,
        slack=slack,
        config=config,
        dataset=settings.bigquery_dataset,
        table=settings.bigquery_table,
        as_of=as_of,
        lookback_minutes=lookback_minutes,
        cooldown_minutes=cooldown_minutes,
        default_channel=settings.slack_default_channel,
        link=link,
        log=log,
    )
    if result.alerts_pending:
        (warn or _log.warning)(
            f"{result.alerts_pending} alert(s) could not be delivered and stay pending "
            f"(the next run retries them): {result.delivery_errors[:5]}"
        )
    return result


def rows_sql(dataset: str, table: str, event_name: str, start: dt.datetime, end: dt.datetime) -> str:
    """The query an alert shows for the window's rows (BigQuery dialect, one line, the
    values written in as literals): ``sql/mixpanel/select_window_rows.sql``."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return R.sql_with_literals(
        render_sql(read_sql("mixpanel/select_window_rows"), dataset=dataset, table=table),
        {"event_date": start.date(), "event_name": event_name, "window_start": start, "window_end": end},
    )


def _ts(value: Any) -> dt.datetime:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").to_pydatetime()


Found = list[tuple[R.Candidate, R.WindowRange]]


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
    log: Optional[Log] = None,
) -> DetectResult:
    """Detect, record and alert (see the module docstring); re-running records nothing twice."""
    say = log or _log.info
    clock = now or utc_now
    as_of = as_of.astimezone(UTC)
    result = DetectResult(
        as_of=as_of,
        lookback_minutes=lookback_minutes,
        cooldown_minutes=cooldown_minutes,
        table=f"{dataset}.{ANOMALIES_TABLE}",
    )
    ensure_anomalies_table(warehouse, dataset)
    # A detection tick that comes before the first ingestion finds no events, not no table.
    ensure_events_table(warehouse, dataset, table)

    found = _anomalous_windows(warehouse, config, dataset, table, as_of, lookback_minutes, result)
    new, statuses = _new_windows(warehouse, found, dataset, cooldown_minutes)
    result.new_anomalies = len(new)
    to_alert = [(c, r) for c, r in new if statuses[(c.event_name, c.window_start)] == R.ALERT]
    samples = _window_samples(warehouse, to_alert, dataset, table)
    detected_at = clock()
    by_name = {e.name: e for e in config.monitored}
    records = [
        R.new_anomaly_row(
            c,
            r.window_minutes,
            by_name.get(c.event_name),
            statuses[(c.event_name, c.window_start)],
            default_channel=default_channel,
            detected_at=detected_at,
            samples=samples.get((c.event_name, c.window_start), []),
        )
        for c, r in new
    ]
    if records:  # insert_missing: a window is recorded at most once
        _load_anomalies(warehouse, dataset, records, mode="insert_missing")
        result.alerts_suppressed = sum(1 for r in records if r["alert_status"] == R.STATUS_SUPPRESSED)
    new_keys = {(c.event_name, c.window_start) for c, _ in to_alert}
    _deliver_pending(warehouse, slack, dataset, table, new_keys, default_channel, link,
                     detected_at, clock, say, result)
    counts = warehouse.run_file("mixpanel/table_row_count", {}, dataset=dataset, table=ANOMALIES_TABLE)
    result.table_rows = int(counts["n"].iloc[0])
    return result


def _anomalous_windows(
    warehouse: Any,
    config: EventsConfig,
    dataset: str,
    table: str,
    as_of: dt.datetime,
    lookback_minutes: int,
    result: DetectResult,
) -> Found:
    """Anomalous windows among the examined ones, counted in the warehouse."""
    groups = R.window_groups(config)
    result.events_monitored = sum(len(v) for v in groups.values())
    found: Found = []
    for (window_minutes, threshold), events in sorted(groups.items()):
        rng = R.examined_windows(as_of, window_minutes, lookback_minutes)
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
            found.append((R.Candidate(str(name), _ts(start), int(count)), rng))
    result.anomalous_windows = len(found)
    return found


def _new_windows(
    warehouse: Any, found: Found, dataset: str, cooldown_minutes: int
) -> tuple[Found, dict[tuple[str, dt.datetime], str]]:
    """The found windows not recorded yet, and their statuses (the cooldown walk over the
    table's history)."""
    if not found:
        return [], {}
    earliest = min(c.window_start for c, _ in found)
    history = warehouse.run_file(
        "mixpanel/anomaly_history",
        {
            "events": sorted({c.event_name for c, _ in found}),
            "since": earliest - dt.timedelta(minutes=cooldown_minutes),
        },
        dataset=dataset,
        anomalies=ANOMALIES_TABLE,
    )
    recorded, alerted = R.cooldown_history(
        (str(n), _ts(s), status)
        for n, s, status in zip(history["event_name"], history["window_start"], history["alert_status"])
    )
    new = [(c, r) for c, r in found if (c.event_name, c.window_start) not in recorded]
    return new, R.assign_statuses([c for c, _ in new], alerted, cooldown_minutes)


def _window_samples(
    warehouse: Any, to_alert: Found, dataset: str, table: str
) -> dict[tuple[str, dt.datetime], list[dict]]:
    """Up to ``rules.MAX_SAMPLES`` summarised events of each window to alert (one query
    per window size)."""
    samples: dict[tuple[str, dt.datetime], list[dict]] = {}
    by_size: dict[int, Found] = {}
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
                "per_window": R.MAX_SAMPLES,
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
                R.summarise_sample(rec["distinct_id"], _ts(rec["event_timestamp"]), props)
            )
    return samples


def _load_anomalies(warehouse: Any, dataset: str, records: list[dict], *, mode: str, **options: Any) -> None:
    """Write ``records`` into ``event_anomalies`` keyed on (event_name, window_start)."""
    starts = [r["window_start"] for r in records]
    warehouse.load(
        pd.DataFrame.from_records(records),
        dataset,
        ANOMALIES_TABLE,
        ANOMALIES_SCHEMA,
        mode=mode,
        key_columns=("event_name", "window_start"),
        match_filter=MATCH_WINDOW_STARTS,
        match_params={"match_from": min(starts), "match_to": max(starts)},
        **options,
    )


def _deliver_pending(
    warehouse: Any,
    slack: Any,
    dataset: str,
    table: str,
    new_keys: set,
    default_channel: str,
    link: Optional[str],
    detected_at: dt.datetime,
    clock: Callable[[], dt.datetime],
    say: Log,
    result: DetectResult,
) -> None:
    """Post every 'pending' alert of the table (new and earlier ones), one message per
    window; mark the delivered ones 'sent', count an attempt on the others."""
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
        content = R.AlertContent(
            event_name=key[0],
            window_start=start,
            window_minutes=minutes,
            event_count=int(rec["event_count"]),
            threshold=to_int(rec["threshold"]),
            samples=sample,
            link=link,
            rows_sql=rows_sql(dataset, table, key[0], start, start + dt.timedelta(minutes=minutes)),
        )
        text, blocks = R.build_alert(content)
        delivery = slack.post_message(text, blocks=blocks, channel=rec["channel"] or default_channel)
        row = dict(rec)
        row.update(
            window_start=start,
            window_end=_ts(rec["window_end"]) if pd.notna(rec["window_end"]) else start + dt.timedelta(minutes=minutes),
            detected_at=_ts(rec["detected_at"]) if pd.notna(rec["detected_at"]) else detected_at,
            delivery_attempts=to_int(rec["delivery_attempts"]) + 1,
            sample=json.dumps(sample, ensure_ascii=False),
        )
        if delivery.delivered:
            row.update(alert_status=R.STATUS_SENT, alerted_at=clock(), last_error=None)
            result.alerts_sent += 1
            say(f"alert sent: {key[0]} {start:%Y-%m-%d %H:%M} UTC to {delivery.destination}")
        else:
            row.update(alert_status=R.STATUS_PENDING, alerted_at=None, last_error=str(delivery.error)[:500])
            result.alerts_pending += 1
            result.delivery_errors.append(f"{key[0]} {start:%Y-%m-%d %H:%M}: {delivery.error}")
            say(f"alert NOT delivered (stays pending): {key[0]} {start:%Y-%m-%d %H:%M} UTC: {delivery.error}")
        updates.append(row)
    if updates:
        _load_anomalies(warehouse, dataset, updates, mode="merge", preserve_on_update=("detected_at",))
