"""Event-spike rules and alert messages of the mixpanel domain (pure functions: no
Dagster, no I/O, no SQL execution; :mod:`store` does the warehouse and Slack work).

Definitions (specs/mixpanel.md), for an event with threshold T and window W minutes:

* windows are tumbling, aligned to UTC epoch multiples of W minutes;
* a window is anomalous when its count is strictly greater than T;
* a run examines the complete windows (``window_end <= as_of``) that ended within the last
  ``lookback_minutes`` before ``as_of`` (``as_of - lookback < window_end <= as_of``);
* cooldown C: walking an event's anomalous windows in time order, a window is alerted
  unless an earlier *alerted* window of that event started less than C minutes before it
  (exactly C minutes later is alerted); otherwise it is suppressed.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote

import numpy as np

from analytics_platform.common import UTC, from_epoch_micros, strip_sql_comments, to_epoch_micros
from analytics_platform.mixpanel.events_config import EventConfig, EventsConfig

ALERT = "alert"  # recorded as 'pending' until Slack confirms, then 'sent'
SUPPRESSED = "suppressed"
STATUS_SENT = "sent"
STATUS_PENDING = "pending"
STATUS_SUPPRESSED = "suppressed"
# A permanent Slack error (unknown channel, bot not in it, revoked token) on this many
# attempts: the alert is given up ('failed') and one notice goes to the default channel.
STATUS_FAILED = "failed"
PERMANENT_FAILURE_ATTEMPTS = 3


def give_up_on_alert(delivery_attempts: int, permanent_error: bool) -> bool:
    """True when an undelivered alert stops being retried: only a permanent delivery error,
    after ``PERMANENT_FAILURE_ATTEMPTS`` attempts (a transient one stays 'pending')."""
    return permanent_error and delivery_attempts >= PERMANENT_FAILURE_ATTEMPTS


def failed_alert_notice(event_name: str, window_start: dt.datetime, channel: str, error: str,
                        attempts: int, table: str) -> str:
    """The one message posted to the default channel when an alert is given up."""
    return (
        f":warning: Mixpanel spike alert for `{event_name}` (window {window_start:%Y-%m-%d %H:%M} UTC) "
        f"could not be delivered to {channel}: {error} ({attempts} attempts). It is marked "
        f"'failed' in {table}; fix the channel or the Slack token, then set its alert_status "
        "back to 'pending' to send it again."
    )

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_SAMPLES = 3
SAMPLE_PROPERTIES = 6
# Properties worth showing first in a sample (when present), then the others in order.
PREFERRED_PROPERTIES = (
    "$os",
    "mp_os",
    "$app_version_string",
    "$device_id",
    "mp_country_code",
    "$city",
    "$model",
    "$insert_id",
)
_SKIPPED_PROPERTIES = {"time", "distinct_id"}


@dataclass(frozen=True)
class WindowRange:
    """The complete windows a run examines: starts in ``[first_start, end)`` step W."""

    window_minutes: int
    first_start: dt.datetime
    end: dt.datetime  # end of the last complete window (<= as_of)

    @property
    def count(self) -> int:
        span = to_epoch_micros(self.end) - to_epoch_micros(self.first_start)
        return max(0, span // (self.window_minutes * 60_000_000))

    def starts(self) -> list[dt.datetime]:
        step = dt.timedelta(minutes=self.window_minutes)
        return [self.first_start + i * step for i in range(self.count)]


def window_start_of(ts: dt.datetime, window_minutes: int) -> dt.datetime:
    """Start of the tumbling W-minute window (epoch-aligned, UTC) that contains ``ts``."""
    w = window_minutes * 60_000_000
    return from_epoch_micros((to_epoch_micros(ts) // w) * w)


def examined_windows(as_of: dt.datetime, window_minutes: int, lookback_minutes: int) -> WindowRange:
    """Windows with ``as_of - lookback < window_end <= as_of`` (see module docstring)."""
    if window_minutes <= 0:
        raise ValueError("window_minutes must be positive")
    if lookback_minutes < 0:
        raise ValueError("lookback_minutes must not be negative")
    w = window_minutes * 60_000_000
    now = to_epoch_micros(as_of)
    last_end = (now // w) * w
    earliest_end = ((now - lookback_minutes * 60_000_000) // w) * w + w
    first_start = earliest_end - w
    if earliest_end > last_end:
        first_start = last_end  # nothing to examine
    return WindowRange(window_minutes, from_epoch_micros(first_start), from_epoch_micros(last_end))


@dataclass(frozen=True)
class Candidate:
    """An anomalous window not recorded yet."""

    event_name: str
    window_start: dt.datetime
    event_count: int


def assign_statuses(
    candidates: Iterable[Candidate],
    alerted_history: Mapping[str, Iterable[dt.datetime]],
    cooldown_minutes: int,
) -> dict[tuple[str, dt.datetime], str]:
    """``ALERT`` or ``SUPPRESSED`` for every candidate (the cooldown walk).

    ``alerted_history``: per event, the starts of windows already recorded as alerted
    ('sent' or 'pending') — the cooldown state that survives across runs.
    """
    if cooldown_minutes < 0:
        raise ValueError("cooldown_minutes must not be negative")
    cooldown = dt.timedelta(minutes=cooldown_minutes)
    by_event: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_event.setdefault(c.event_name, []).append(c)
    out: dict[tuple[str, dt.datetime], str] = {}
    for event, items in by_event.items():
        alerted = sorted(alerted_history.get(event, ()))
        for c in sorted(items, key=lambda x: x.window_start):
            i = bisect.bisect_left(alerted, c.window_start)  # alerted[:i] started earlier
            previous = alerted[i - 1] if i > 0 else None
            if previous is not None and c.window_start - previous < cooldown:
                out[(event, c.window_start)] = SUPPRESSED
            else:
                out[(event, c.window_start)] = ALERT
                bisect.insort(alerted, c.window_start)
    return out


def window_groups(config: EventsConfig) -> dict[tuple[int, int], list[EventConfig]]:
    """The monitored events grouped by (window minutes, threshold): one count query each."""
    groups: dict[tuple[int, int], list[EventConfig]] = {}
    for event in config.monitored:
        groups.setdefault((event.time_window_minutes, event.alert_threshold), []).append(event)
    return groups


def cooldown_history(rows: Iterable[tuple[str, dt.datetime, str]]) -> tuple[set, dict[str, list[dt.datetime]]]:
    """From recorded (event_name, window_start, alert_status) rows: the recorded windows
    (a window is recorded at most once) and, per event, the starts of the alerted ones
    ('sent' or 'pending': the cooldown state)."""
    recorded: set[tuple[str, dt.datetime]] = set()
    alerted: dict[str, list[dt.datetime]] = {}
    for name, start, status in rows:
        recorded.add((name, start))
        if status in (STATUS_SENT, STATUS_PENDING):
            alerted.setdefault(name, []).append(start)
    return recorded, alerted


def new_anomaly_row(
    candidate: Candidate,
    window_minutes: int,
    event: Optional[EventConfig],
    status: str,
    *,
    default_channel: str,
    detected_at: dt.datetime,
    samples: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The ``event_anomalies`` row of a newly found window: 'pending' (to alert, with its
    samples) or 'suppressed' (cooldown), never delivered yet."""
    alert = status == ALERT
    return {
        "event_name": candidate.event_name,
        "window_start": candidate.window_start,
        "window_end": candidate.window_start + dt.timedelta(minutes=window_minutes),
        "window_minutes": window_minutes,
        "event_count": candidate.event_count,
        "threshold": int(event.alert_threshold) if event else None,
        "channel": (event.alert_channel if event and event.alert_channel else default_channel),
        "detected_at": detected_at,
        "alert_status": STATUS_PENDING if alert else STATUS_SUPPRESSED,
        "alerted_at": None,
        "sample": json.dumps(list(samples), ensure_ascii=False) if alert else None,
        "delivery_attempts": 0,
        "last_error": None,
    }


# --------------------------------------------------------------------------- samples
def _format_value(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarise_sample(
    distinct_id: Optional[str], event_time: dt.datetime, properties_json: Optional[str]
) -> dict[str, Any]:
    """A small, JSON-able view of one event: distinct_id, time and a few properties."""
    props: dict[str, Any] = {}
    try:
        parsed = json.loads(properties_json) if properties_json else {}
    except (TypeError, ValueError):
        parsed = {}
    if isinstance(parsed, dict):
        keys = [k for k in PREFERRED_PROPERTIES if k in parsed]
        keys += [k for k in parsed if k not in keys and k not in _SKIPPED_PROPERTIES]
        for key in keys[:SAMPLE_PROPERTIES]:
            props[key] = _format_value(parsed[key])
    ts = event_time.astimezone(UTC) if event_time.tzinfo else event_time.replace(tzinfo=UTC)
    return {
        "distinct_id": distinct_id,
        "time": ts.isoformat().replace("+00:00", "Z"),
        "properties": props,
    }


# --------------------------------------------------------------------------- message
@dataclass(frozen=True)
class AlertContent:
    event_name: str
    window_start: dt.datetime
    window_minutes: int
    event_count: int
    threshold: int
    samples: Sequence[Mapping[str, Any]]
    link: Optional[str] = None
    rows_sql: Optional[str] = None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hhmm(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).strftime("%H:%M")


_BQ_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def bigquery_string(value: str) -> str:
    """``value`` as the body of a single-quoted BigQuery string literal: backslash, quote and
    control characters escaped (a raw newline would end the literal for BigQuery)."""
    return "".join(
        _BQ_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
        for ch in value
    )


_PARAMETER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


def bigquery_literal(value: Any) -> str:
    """``value`` as a BigQuery literal: a string (escaped), a DATE as ``'YYYY-MM-DD'``, a
    TIMESTAMP as ``'YYYY-MM-DD HH:MM:SS UTC'`` (whole seconds, as windows are) or an integer."""
    if isinstance(value, dt.datetime):
        return f"'{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC'"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return f"'{bigquery_string(value)}'"
    raise TypeError(f"no BigQuery literal for {type(value).__name__}")


def sql_with_literals(sql: str, params: Mapping[str, Any]) -> str:
    """A statement for people to read and paste: comments removed, on one line, every
    ``@parameter`` written in as its literal (:func:`bigquery_literal`), in one pass so a
    value holding ``@x`` is never substituted again."""
    one_line = " ".join(strip_sql_comments(sql).split())
    return _PARAMETER.sub(lambda m: bigquery_literal(params[m.group(1)]), one_line)


def warehouse_link(
    *,
    bigquery_project: Optional[str],
    dataset: str,
    table: str,
    webserver_url: str,
) -> str:
    """Where the rows can be looked at: the BigQuery console table when the rows are in
    ``bigquery_project``, else the table's asset page in the Dagster UI."""
    if bigquery_project:
        p = quote(bigquery_project, safe="")
        return (
            f"https://console.cloud.google.com/bigquery?project={p}"
            f"&ws=!1m5!1m4!4m3!1s{p}!2s{quote(dataset, safe='')}!3s{quote(table, safe='')}"
        )
    return f"{webserver_url.rstrip('/')}/assets/{quote(dataset, safe='')}/{quote(table, safe='')}"


def build_alert(content: AlertContent) -> tuple[str, list[dict]]:
    """(fallback text, Block Kit blocks) of one alert, within Slack's limits."""
    start = content.window_start.astimezone(UTC)
    end = start + dt.timedelta(minutes=content.window_minutes)
    window = f"{_hhmm(start)}–{_hhmm(end)} UTC"
    day = start.date().isoformat()
    text = (
        f":rotating_light: Event spike: {content.event_name} — {content.event_count} events "
        f"in {day} {window} (threshold {content.threshold})"
    )
    blocks: list[dict] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"Event spike: {content.event_name}", MAX_HEADER_TEXT)},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*Event*\n`{content.event_name}`", 2000)},
                {"type": "mrkdwn", "text": f"*Count*\n{content.event_count}"},
                {"type": "mrkdwn", "text": f"*Threshold*\n{content.threshold}"},
                {"type": "mrkdwn", "text": f"*Window ({day})*\n{window}"},
            ],
        },
    ]
    samples = list(content.samples)[:MAX_SAMPLES]
    if samples:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Sample events* ({len(samples)})"}})
        for sample in samples:
            body = json.dumps(sample, ensure_ascii=False, indent=1)
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": _clip(f"```{_clip(body, MAX_SECTION_TEXT - 7)}```", MAX_SECTION_TEXT)},
                }
            )
    if content.link or content.rows_sql:
        parts = []
        if content.link:
            parts.append(f"<{content.link}|Rows in the warehouse>")
        if content.rows_sql:
            parts.append(f"```{_clip(content.rows_sql, MAX_SECTION_TEXT - 200)}```")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(parts), MAX_SECTION_TEXT)}})
    return text, blocks[:MAX_BLOCKS]


def rejected_partition_dates(
    rejected_line_no: np.ndarray,
    good_line_no: np.ndarray,
    good_dates: np.ndarray,
    first_day: dt.date,
    last_day: dt.date,
    carry: Optional[dt.date],
) -> list[dt.date]:
    """The partition a rejected line is filed under.

    A one-day export: that day.  A range: the export streams day after day, so the event
    date of the nearest preceding valid line (clamped to the range), else the first day.
    """
    if first_day == last_day or len(rejected_line_no) == 0:
        return [first_day] * len(rejected_line_no)
    order = np.argsort(good_line_no, kind="stable")
    sorted_lines = good_line_no[order]
    sorted_dates = good_dates[order]
    out = []
    positions = np.searchsorted(sorted_lines, rejected_line_no, side="left") - 1
    for pos in positions:
        day = sorted_dates[pos] if pos >= 0 else carry
        if day is None:
            day = first_day
        day = min(max(day, first_day), last_day)
        out.append(day)
    return out


def export_dates(
    first_day: dt.date, last_day: dt.date, project_timezone: str, now: dt.datetime
) -> Optional[tuple[dt.date, dt.date]]:
    """The ``from_date``/``to_date`` to ask Mixpanel for the UTC days ``[first_day,
    last_day]`` when the project reads them as dates of ``project_timezone``: the local
    dates that cover the UTC range, never a ``to_date`` after the project's local today
    (Mixpanel answers 400).  None when nothing of the range has happened yet.  The export
    may then hold events of neighbouring UTC days: the caller keeps the range's own."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(project_timezone)
    start = dt.datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    end = dt.datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + dt.timedelta(days=1)
    from_date = start.astimezone(zone).date()
    to_date = (end - dt.timedelta(microseconds=1)).astimezone(zone).date()
    local_today = now.astimezone(zone).date()
    to_date = min(to_date, local_today)
    if from_date > to_date:
        return None
    return from_date, to_date


# --------------------------------------------------------------------------- export budget
# Mixpanel advises exporting at most 30 days per query: a longer range is asked in slices.
MAX_EXPORT_DAYS = 30
TRIGGER_TAG = "analytics_platform/trigger"


def utc_days_per_export(project_timezone: str, max_days: int = MAX_EXPORT_DAYS) -> int:
    """UTC days per export query so that the asked (project-local) dates span at most
    ``max_days``: a zone off UTC asks one local day more than the UTC days it covers
    (:func:`export_dates`)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(project_timezone)
    offsets = {zone.utcoffset(dt.datetime(2024, month, 1)) for month in (1, 7)}
    return max_days if offsets == {dt.timedelta(0)} else max_days - 1


def export_slices(
    ranges: Sequence[tuple[dt.date, dt.date]], days_per_slice: int = MAX_EXPORT_DAYS
) -> list[tuple[dt.date, dt.date]]:
    """Each contiguous ``(first, last)`` range cut into consecutive slices of at most
    ``days_per_slice`` days (a 75-day range: 30 + 30 + 15), in order."""
    if days_per_slice < 1:
        raise ValueError("days_per_slice must be at least 1")
    out: list[tuple[dt.date, dt.date]] = []
    step = dt.timedelta(days=days_per_slice)
    for first, last in ranges:
        start = first
        while start <= last:
            end = min(start + step - dt.timedelta(days=1), last)
            out.append((start, end))
            start = end + dt.timedelta(days=1)
    return out


def export_purpose(trigger: Optional[str], days: Sequence[dt.date], today: dt.date) -> str:
    """What a run's export queries are charged as in the export budget: ``refresh`` (the
    15-minute schedule's run, which covers the current UTC day), ``late_sweep`` (the daily
    sweep) - both may use the reserve - or ``backfill`` (anything else: UI/CLI backfills,
    manual runs, a refresh-tagged run that does not cover today)."""
    if trigger == "refresh" and today in set(days):
        return "refresh"
    if trigger == "late_sweep":
        return "late_sweep"
    return "backfill"


# --------------------------------------------------------------------------- export log
def export_log_rows(
    *,
    days: Sequence[dt.date],
    run_id: str,
    export_query_time: dt.datetime,
    asked: Optional[tuple[dt.date, dt.date]],
    valid_by_day: Mapping[dt.date, int],
    rejected_by_day: Mapping[dt.date, int],
    counts_before: Mapping[dt.date, int],
    counts_after: Mapping[dt.date, int],
    recorded_at: dt.datetime,
    purpose: str,
) -> list[dict[str, Any]]:
    """One ``mixpanel_export_log`` row per day of an export slice.

    ``lines_received``: the export's lines of the day (valid + rejected); ``rows_inserted``:
    rows the day gained (after - before the load: the load only inserts); ``duplicates``:
    valid lines that added no row (their ``event_id`` was already loaded or earlier in
    the export); ``rejected``: malformed lines filed under the day."""
    rows = []
    for day in days:
        valid = int(valid_by_day.get(day, 0))
        inserted = int(counts_after.get(day, 0)) - int(counts_before.get(day, 0))
        rejected = int(rejected_by_day.get(day, 0))
        rows.append(
            {
                "day": day,
                "run_id": run_id,
                "export_query_time": export_query_time,
                "lines_received": valid + rejected,
                "rows_inserted": inserted,
                "duplicates": max(valid - inserted, 0),
                "rejected": rejected,
                "export_from_date": asked[0] if asked else None,
                "export_to_date": asked[1] if asked else None,
                "purpose": purpose,
                "recorded_at": recorded_at,
            }
        )
    return rows


@dataclass(frozen=True)
class LateRows:
    """A day's completeness record from the export log."""

    day: dt.date
    rows_at_close: int  # rows inserted up to the first export made after the day ended
    late_rows: int  # rows later re-exports added
    threshold_rows: float

    @property
    def flagged(self) -> bool:
        return self.late_rows > self.threshold_rows

    @property
    def late_percent(self) -> Optional[float]:
        return round(100.0 * self.late_rows / self.rows_at_close, 3) if self.rows_at_close else None


def late_rows_threshold(rows_at_close: int, max_percent: float) -> float:
    """New rows a later re-export may add before the day is flagged: ``max_percent`` of the
    rows the day had at its first export after it ended."""
    return max(rows_at_close, 0) * max_percent / 100.0
