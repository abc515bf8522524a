"""Pure rules of the PostHog + Firebase session aggregates (no Dagster, no I/O).

* the output columns of ``posthog_aggregated.sessions``;
* which optional columns of PostHog's sessions export are carried through
  (an allow-list plus the ``entry_utm_`` prefix; unknown extras are ignored, missing ones
  become NULL);
* the time windows (and bound parameters) of a run over the UTC days
  ``[first_day, last_day]``, and the days a daily run reloads (late events);
* the configured behavioural event names.

The SQL text of the sessions MERGE is assembled in :mod:`analytics_platform.posthog.store`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from analytics_platform.common import UTC, day_start, to_epoch_micros, validate_identifier

# Output columns of posthog_aggregated.sessions that are always present, in order.
SESSION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("session_id", "STRING"),
    ("distinct_id", "STRING"),
    ("firebase_user_id", "STRING"),
    ("session_date", "DATE"),
    ("session_start", "TIMESTAMP"),
    ("session_end", "TIMESTAMP"),
    ("duration_seconds", "FLOAT64"),
    ("event_count", "INT64"),
    ("pageview_count", "INT64"),
    ("screen_count", "INT64"),
    ("autocapture_count", "INT64"),
    ("events_created_count", "INT64"),
    ("quiz_started_count", "INT64"),
    ("quiz_completed_count", "INT64"),
    ("scroll_event_count", "INT64"),
    ("max_scroll_depth", "FLOAT64"),
    ("firebase_event_count", "INT64"),
    ("user_created_at", "TIMESTAMP"),
    ("country", "STRING"),
    ("_loaded_at", "TIMESTAMP"),
    # computed from the session's events (first non-empty value by time)
    ("device_type", "STRING"),
    ("os", "STRING"),
    ("app_version", "STRING"),
)

# Counts that must never be negative (asset check).
SESSION_COUNT_COLUMNS: tuple[str, ...] = (
    "event_count",
    "pageview_count",
    "screen_count",
    "autocapture_count",
    "events_created_count",
    "quiz_started_count",
    "quiz_completed_count",
    "scroll_event_count",
    "firebase_event_count",
)

# Optional columns of PostHog's sessions export carried through when the export has them.
# Always part of the output schema (NULL when the export lacks them), so consumers see a
# stable shape.  Types are the OUTPUT types; the source value is SAFE_CAST to them.
CARRY_COLUMNS: dict[str, str] = {
    "entry_current_url": "STRING",
    "end_current_url": "STRING",
    "exit_current_url": "STRING",
    "entry_pathname": "STRING",
    "end_pathname": "STRING",
    "exit_pathname": "STRING",
    "entry_hostname": "STRING",
    "entry_referring_domain": "STRING",
    "last_external_click_url": "STRING",
    "is_bounce": "BOOL",
    "channel_type": "STRING",
    "entry_utm_source": "STRING",
    "entry_utm_medium": "STRING",
    "entry_utm_campaign": "STRING",
    "entry_utm_term": "STRING",
    "entry_utm_content": "STRING",
}
# Carried columns that are also computed from the session's events (PostHog's sessions v2
# rules, sql/posthog/sessions_merge.sql): the export's value wins when the export has the
# column and a value for the session, else the computed one.  Output column -> the
# column of the merge's ``agg`` (a.), ``entry`` (e.) or ``derived`` (d.) step that holds the
# computed value.
COMPUTED_FROM_EVENTS: dict[str, str] = {
    "entry_current_url": "a.ev_entry_url",
    "end_current_url": "a.ev_exit_url",
    "exit_current_url": "a.ev_exit_url",
    "entry_referring_domain": "e.ev_referring_domain",
    "is_bounce": "d.ev_is_bounce",
    "channel_type": "d.ev_channel_type",
    "entry_utm_source": "e.ev_utm_source",
    "entry_utm_medium": "e.ev_utm_medium",
    "entry_utm_campaign": "e.ev_utm_campaign",
}

# Any other export column starting with one of these is carried too (as STRING) and added
# to the output table the first time it is seen.
CARRY_PREFIXES: tuple[str, ...] = ("entry_utm_",)

DEFAULT_EVENT_NAMES = {
    "event_created_event": "event_created",
    "quiz_started_event": "quiz_started",
    "quiz_completed_event": "quiz_completed",
    "scroll_event": "scroll",
}
DEFAULT_MAX_SESSION_DAYS = 1
LATE_DAYS = 3  # a daily run reloads the new day plus this many previous days


@dataclass(frozen=True)
class CarryPlan:
    """What the export offers this run and how each carried column is filled."""

    export_exists: bool
    present: tuple[tuple[str, str, str], ...]  # (output name, output type, source name)
    missing: tuple[str, ...]  # allow-listed, absent from the export -> NULL
    ignored: tuple[str, ...]  # export columns that are neither used nor carried
    has_end_timestamp: bool = False
    has_start_timestamp: bool = False
    end_timestamp_name: str = "end_timestamp"
    start_timestamp_name: str = "start_timestamp"

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """Every carried output column (fixed allow-list first, then discovered ones)."""
        out = [(name, typ) for name, typ in CARRY_COLUMNS.items()]
        known = set(CARRY_COLUMNS)
        out += [(name, typ) for name, typ, _ in self.present if name not in known]
        return tuple(out)

    @property
    def present_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.present)

    def field_sources(self) -> dict[str, str]:
        """Where each carried column's value comes from in this run (metadata, docs)."""
        present = set(self.present_names) if self.export_exists else set()
        out = {}
        for name, _ in self.columns:
            if name in present and name in COMPUTED_FROM_EVENTS:
                out[name] = "sessions export, else events"
            elif name in present:
                out[name] = "sessions export"
            elif name in COMPUTED_FROM_EVENTS:
                out[name] = "events"
            else:
                out[name] = "none (NULL)"
        return out


# Export columns the aggregation knows about but does not carry (computed from events).
_EXPORT_USED_OR_RECOMPUTED = {
    "session_id",
    "distinct_id",
    "start_timestamp",
    "end_timestamp",
    "session_duration",
    "pageview_count",
    "screen_count",
    "autocapture_count",
}


def plan_carry(export_columns: Sequence[str]) -> CarryPlan:
    """Decide which export columns to carry: allow-list + prefixes, never failing on extras.

    ``export_columns`` is the export table's column list (``[]`` when it does not exist).
    """
    present: list[tuple[str, str, str]] = []
    ignored: list[str] = []
    by_lower: dict[str, str] = {}
    for name in export_columns:
        by_lower.setdefault(name.lower(), name)
    for lower, source in by_lower.items():
        if lower in CARRY_COLUMNS:
            present.append((lower, CARRY_COLUMNS[lower], source))
        elif lower.startswith(CARRY_PREFIXES) and _is_identifier(lower):
            present.append((lower, "STRING", source))
        elif lower not in _EXPORT_USED_OR_RECOMPUTED:
            ignored.append(source)
    present_names = {p[0] for p in present}
    return CarryPlan(
        export_exists=bool(export_columns) and "session_id" in by_lower,
        present=tuple(present),
        missing=tuple(name for name in CARRY_COLUMNS if name not in present_names),
        ignored=tuple(ignored),
        has_end_timestamp="end_timestamp" in by_lower,
        has_start_timestamp="start_timestamp" in by_lower,
        end_timestamp_name=by_lower.get("end_timestamp", "end_timestamp"),
        start_timestamp_name=by_lower.get("start_timestamp", "start_timestamp"),
    )


def _is_identifier(name: str) -> bool:
    try:
        validate_identifier(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RunWindow:
    """Time bounds of one run over the UTC days [first_day, last_day]."""

    first_day: dt.date
    last_day: dt.date
    max_session_days: int = DEFAULT_MAX_SESSION_DAYS

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(f"last_day {self.last_day} is before first_day {self.first_day}")
        if self.max_session_days < 0:
            raise ValueError("max_session_days must be >= 0")

    @property
    def range_start(self) -> dt.datetime:
        return day_start(self.first_day)

    @property
    def range_end(self) -> dt.datetime:
        return day_start(self.last_day + dt.timedelta(days=1))

    @property
    def read_start(self) -> dt.datetime:
        # sessions that started the day(s) before and still run at first_day 00:00 must be
        # seen so that their events are not taken for sessions starting on first_day
        return self.range_start - dt.timedelta(days=self.max_session_days)

    @property
    def read_end(self) -> dt.datetime:
        # a session starting on last_day may run up to max_session_days days later
        return self.range_end + dt.timedelta(days=self.max_session_days)

    @property
    def days(self) -> list[dt.date]:
        n = (self.last_day - self.first_day).days + 1
        return [self.first_day + dt.timedelta(days=i) for i in range(n)]

    def params(self, event_names: Mapping[str, str], loaded_at: dt.datetime) -> dict[str, Any]:
        """Every bound parameter of sessions_merge.sql."""
        missing = set(DEFAULT_EVENT_NAMES) - set(event_names)
        if missing:
            raise ValueError(f"event names missing: {sorted(missing)}")
        fb_first = self.range_start - dt.timedelta(days=1)
        fb_last = self.read_end + dt.timedelta(days=1)
        return {
            "first_day": self.first_day,
            "last_day": self.last_day,
            "range_start": self.range_start,
            "range_end": self.range_end,
            "read_start": self.read_start,
            "read_end": self.read_end,
            "fb_start_us": to_epoch_micros(self.range_start),
            "fb_end_us": to_epoch_micros(self.read_end),
            "fb_first_date": fb_first.strftime("%Y%m%d"),
            "fb_last_date": fb_last.strftime("%Y%m%d"),
            "loaded_at": loaded_at.astimezone(UTC),
            **{k: str(event_names[k]) for k in DEFAULT_EVENT_NAMES},
        }


def validate_event_names(names: Mapping[str, str]) -> dict[str, str]:
    """Strip and check the configured behavioural event names (non-empty strings)."""
    out = {}
    for key in DEFAULT_EVENT_NAMES:
        value = str(names.get(key, "") or "").strip()
        if not value:
            raise ValueError(f"{key} must be a non-empty event name")
        out[key] = value
    return out


def late_window_days(last_day: dt.date, first_partition: dt.date, late_days: int = LATE_DAYS) -> list[dt.date]:
    """The days a daily run loads: ``last_day`` and the ``late_days`` before it, from the
    first partition on."""
    days = [last_day - dt.timedelta(days=i) for i in range(late_days, -1, -1)]
    return [d for d in days if d >= first_partition]
