"""Pure rules of the state-loss temp users cohort (no Dagster, no I/O).

The detection itself is one warehouse query (``sql/cohorts/detect_temp_users.sql``); this
module holds what surrounds it: the time windows derived from ``as_of``, the Mixpanel
profile updates and their batching, the bookkeeping of batch outcomes, the audit-log rows
and the Slack summary of temp users who were active yesterday.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from analytics_platform.common import as_utc, day_start, utc_now

PROCESS_NAME = "temp_users_cohort"
PRIVACY_EVENT = "impression_privacy"
RESTORE_EVENT = "impression_restore_user_state_by_device_id"
COHORT_EVENTS = (PRIVACY_EVENT, RESTORE_EVENT)
MAX_GAP_SECONDS = 120
DEFAULT_LOOKBACK_DAYS = 2
# The 15-minute refresh keeps the events table within minutes of now; an hour behind
# as_of means ingestion stopped (four missed ticks) and the detection would miss pairs.
DEFAULT_MAX_INGESTION_LAG_MINUTES = 60
ENGAGE_BATCH_SIZE = 2000  # /engage accepts at most 2000 updates per request
MARKER_PROPERTY = "state_loss_temp_user_cohort_marker"
LAST_UPDATED_PROPERTY = "state_loss_last_updated"
MARKER_PROPERTIES = (MARKER_PROPERTY, LAST_UPDATED_PROPERTY)
SYNC_FLUSH_SIZE = 10_000  # synced ids written back per UPDATE (bound array parameter)
SUMMARY_SAMPLE = 20  # distinct_ids listed in the Slack summary / check metadata

# Audit-log step names: the old service's names, kept for its dashboards.
STEP_DETECT = "step_1"
STEP_MARK = "step_2"
STEP_REMOVE = "remove_active"
STEP_SUMMARY = "active_yesterday_summary"

T = TypeVar("T")


def iso_utc(value: dt.datetime) -> str:
    """``2024-06-06T11:00:00Z``: ISO-8601 in UTC, second precision."""
    return as_utc(value).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionWindow:
    """Bound parameters of the detection query."""

    as_of: dt.datetime
    window_start: dt.datetime  # first privacy event considered (inclusive)
    restore_until: dt.datetime  # last restore event that can pair (inclusive)
    lookback_days: int

    def params(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "window_start": self.window_start,
            "restore_until": self.restore_until,
            "max_gap_seconds": MAX_GAP_SECONDS,
        }


def detection_window(as_of: dt.datetime, lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> DetectionWindow:
    """Privacy events in ``[as_of - lookback_days, as_of)``; restores up to ``as_of + 120 s``."""
    if isinstance(lookback_days, bool) or not isinstance(lookback_days, int) or lookback_days < 1:
        raise ValueError(f"lookback_days must be a positive whole number of days, got {lookback_days!r}")
    as_of = as_utc(as_of)
    return DetectionWindow(
        as_of=as_of,
        window_start=as_of - dt.timedelta(days=lookback_days),
        restore_until=as_of + dt.timedelta(seconds=MAX_GAP_SECONDS),
        lookback_days=lookback_days,
    )


@dataclass(frozen=True)
class ActivityWindow:
    """"Yesterday" relative to ``as_of``: the whole UTC day before ``as_of``'s date."""

    day: dt.date
    start: dt.datetime
    end: dt.datetime  # exclusive

    def params(self) -> dict[str, Any]:
        return {"day_start": self.start, "day_end": self.end}


def yesterday_window(as_of: dt.datetime) -> ActivityWindow:
    as_of = as_utc(as_of)
    day = as_of.date() - dt.timedelta(days=1)
    start = day_start(day)
    return ActivityWindow(day=day, start=start, end=start + dt.timedelta(days=1))


# ---------------------------------------------------------------------------------------
# Mixpanel profile updates
# ---------------------------------------------------------------------------------------
def marker_properties(marker: str, updated_at: dt.datetime) -> dict[str, str]:
    """The ``$set`` of a marked profile."""
    if not marker:
        raise ValueError("COHORT_MARKER must not be empty")
    return {MARKER_PROPERTY: marker, LAST_UPDATED_PROPERTY: iso_utc(updated_at)}


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of at most ``size`` items (nothing for an empty input)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class BatchOutcome:
    index: int
    distinct_ids: list[str]
    ok: bool
    requests: int = 0
    destination: str = ""
    error: Optional[str] = None


@dataclass
class SyncReport:
    """What one marking (or unmarking) pass did, batch by batch."""

    outcomes: list[BatchOutcome] = field(default_factory=list)

    @property
    def batches(self) -> int:
        return len(self.outcomes)

    @property
    def failed_batches(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)

    @property
    def succeeded_ids(self) -> list[str]:
        return [i for o in self.outcomes if o.ok for i in o.distinct_ids]

    @property
    def failed_ids(self) -> list[str]:
        return [i for o in self.outcomes if not o.ok for i in o.distinct_ids]

    @property
    def requests(self) -> int:
        return sum(o.requests for o in self.outcomes)

    @property
    def errors(self) -> list[str]:
        return [f"batch {o.index}: {o.error}" for o in self.outcomes if not o.ok]

    def as_details(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "users_ok": len(self.succeeded_ids),
            "users_failed": len(self.failed_ids),
            "requests": self.requests,
            "errors": self.errors[:10],
        }


def send_in_batches(
    distinct_ids: Sequence[str],
    build_update: Callable[[str], dict],
    send: Callable[[list[dict]], Any],
    *,
    batch_size: int = ENGAGE_BATCH_SIZE,
    on_success: Optional[Callable[[list[str]], None]] = None,
) -> SyncReport:
    """Send one request per batch of ``batch_size`` updates; a failed batch never stops the rest.

    ``send`` returns an object with ``ok`` / ``requests`` / ``destination`` / ``error``
    (``MixpanelResource.engage``'s ``EngageResult``); an exception raised by ``send`` counts
    as that batch's failure.  ``on_success`` is called with each accepted batch's ids.
    """
    if batch_size > ENGAGE_BATCH_SIZE:
        raise ValueError(f"/engage batches hold at most {ENGAGE_BATCH_SIZE} updates")
    report = SyncReport()
    for index, ids in enumerate(chunked(list(distinct_ids), batch_size), start=1):
        try:
            result = send([build_update(i) for i in ids])
            outcome = BatchOutcome(
                index,
                ids,
                bool(getattr(result, "ok", False)),
                int(getattr(result, "requests", 0) or 0),
                str(getattr(result, "destination", "") or ""),
                getattr(result, "error", None),
            )
        except Exception as exc:  # noqa: BLE001 - isolate the batch, report it
            outcome = BatchOutcome(index, ids, False, 0, "", f"{type(exc).__name__}: {exc}")
        report.outcomes.append(outcome)
        if outcome.ok and on_success is not None:
            on_success(ids)
    return report


# ---------------------------------------------------------------------------------------
# audit log
# ---------------------------------------------------------------------------------------
def audit_params(
    run_id: str,
    step: str,
    status: str,
    details: Optional[dict[str, Any]] = None,
    logged_at: Optional[dt.datetime] = None,
) -> dict[str, Any]:
    """Bound parameters of one ``process_audit_log`` row (``details`` as JSON text)."""
    return {
        "process_name": PROCESS_NAME,
        "run_id": run_id,
        "step": step,
        "status": status,
        "logged_at": as_utc(logged_at or utc_now()),
        "details": json.dumps(details or {}, default=_json_default, sort_keys=True),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------------------------------
# active-yesterday summary
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActiveUser:
    distinct_id: str
    events: int
    last_active_at: Optional[dt.datetime]


def active_users_from_rows(rows: Iterable[dict]) -> list[ActiveUser]:
    out = []
    for row in rows:
        last = row.get("last_active_at")
        if last is not None and hasattr(last, "to_pydatetime"):
            last = last.to_pydatetime()
        out.append(ActiveUser(str(row["distinct_id"]), int(row.get("events") or 0), last))
    return sorted(out, key=lambda u: (-u.events, u.distinct_id))


def summary_message(
    day: dt.date,
    active: Sequence[ActiveUser],
    cohort_size: int,
    *,
    table: str,
    removed: int = 0,
    remove_active: bool = False,
    sample: int = SUMMARY_SAMPLE,
) -> tuple[str, list[dict]]:
    """Slack text and Block Kit blocks of the daily active-yesterday summary."""
    n = len(active)
    head = (
        f"State-loss temp users: {n} of {cohort_size} in `{table}` were active on "
        f"{day.isoformat()} (UTC) under the same distinct_id; they may not be temporary."
    )
    if remove_active:
        action = f"{removed} removed from the cohort (marker unset in Mixpanel)."
    else:
        action = "Not removed: re-run with `remove_active: true` to take them out of the cohort."
    lines = [
        f"• `{u.distinct_id}`: {u.events} event(s), last at "
        f"{iso_utc(u.last_active_at) if u.last_active_at else 'n/a'}"
        for u in active[:sample]
    ]
    if n > sample:
        lines.append(f"… and {n - sample} more")
    listing = "\n".join(lines)[:2900]
    text = f"{head} {action}"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*\n{action}"[:3000]}},
    ]
    if listing:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": listing}})
    return text, blocks


def ingestion_is_behind(loaded_until: Optional[dt.datetime], as_of: dt.datetime, max_lag: dt.timedelta) -> bool:
    """True when the events table (loaded up to ``loaded_until``: its latest ``inserted_at``
    or event time, None when empty) is more than ``max_lag`` behind ``as_of``."""
    return loaded_until is None or as_utc(loaded_until) < as_utc(as_of) - max_lag
