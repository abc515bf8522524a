"""The rules of the engagement domain as pure functions (pandas/numpy; no Dagster, no I/O):
validation of raw Firestore event documents, and the engagement signals and goal
milestones of specs/signals.md (vectorised).

Signals input: one row per evaluated user with aggregates computed set-based in the warehouse
(``sql/engagement/user_aggregates.sql``), as of a timestamp T:

=============================  ==============================================================
column                         meaning (events before T only)
=============================  ==============================================================
user_id                        the user
has_goal                       the user has at least one row in ``user_goals``
event_count                    all events
service_event_count            events whose ``app_id`` is a ``package_name`` in ``apps``
aligned_event_count            goal-aligned events
max_aligned_foreground_ms      largest ``foreground_time_ms`` of one goal-aligned event
max_app_sessions_week0         max over goal-aligned apps of the distinct ``session_id``s in week 0
f0 … f9                        F_k: sum of ``foreground_time_ms`` of goal-aligned events in week k
has_tier1_event/has_tier2_event  at least one tier-1 / tier-2 aligned event
=============================  ==============================================================

Week k is [T − 7(k+1) days, T − 7k days): an event exactly at T − 7 days is in week 0.

Documents: a raw document is what ``FirestoreResource.iter_event_pages`` yields:
``{"path", "user_id", "event_id", "fields"}``. A document is

* **in scope** when its path is ``{root}/{userId}/{events}/{eventId}`` exactly (a
  collection-group query also returns ``events`` sub-collections under other parents);
* **valid** when ``app_id`` and ``session_id`` are non-empty strings,
  ``foreground_time_ms`` is an integer >= 0 (an integral float such as ``1500.0`` is
  accepted: JavaScript clients may store numbers as doubles; booleans are not numbers) and
  ``timestamp`` is a timestamp.

Invalid documents are never fatal: they become rejects with every reason listed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from analytics_platform.common import UTC, day_start

REGISTRATION_FOREGROUND_MS = 240_000  # one event of >= 4 minutes
REGISTRATION_SESSIONS_WEEK0 = 4  # or >= 4 distinct sessions of one app in week 0
LOGIN_FOREGROUND_MS = 60_000  # one event of >= 1 minute
ENGAGED_WEEKS = 3  # F_0..F_2 > 0
RETAINED_WEEKS = 9  # F_0..F_8 > 0
WEEKS_NEEDED = RETAINED_WEEKS + 1  # retained drop-off looks at F_1..F_9
WEEK = dt.timedelta(days=7)

WEEK_COLUMNS = tuple(f"f{k}" for k in range(WEEKS_NEEDED))
AGGREGATE_COLUMNS = (
    "user_id",
    "has_goal",
    "event_count",
    "service_event_count",
    "aligned_event_count",
    "max_aligned_foreground_ms",
    "max_app_sessions_week0",
    *WEEK_COLUMNS,
    "has_tier1_event",
    "has_tier2_event",
)

SIGNAL_FLAGS = (
    "goal_setting_completed",
    "customer_app_registration_completed",
    "customer_app_login_completed",
    "customer_app_engaged",
    "customer_app_engagement_dropoff",
    "customer_app_retained",
    "customer_app_retained_dropoff",
)
SIGNAL_COUNTS = ("event_count", "service_event_count", "aligned_event_count")
SIGNAL_COLUMNS = ("user_id", *SIGNAL_FLAGS, *SIGNAL_COUNTS)

TIERS = (1, 2)
_MILESTONE_SIGNAL = {
    "app_registered": "customer_app_registration_completed",
    "app_engaged": "customer_app_engaged",
    "app_engagement_dropoff": "customer_app_engagement_dropoff",
    "app_retained": "customer_app_retained",
    "app_retention_dropoff": "customer_app_retained_dropoff",
}
MILESTONE_FLAGS = ("goal_setting_complete",) + tuple(
    f"tier{k}_{name}" for k in TIERS for name in _MILESTONE_SIGNAL
)
MILESTONE_COLUMNS = ("user_id", *MILESTONE_FLAGS)
MILESTONE_INPUT_COLUMNS = ("user_id", *SIGNAL_FLAGS, "has_tier1_event", "has_tier2_event")


def as_of_for_day(day: dt.date) -> dt.datetime:
    """T for the daily partition ``day``: the end of that UTC day (next day 00:00 UTC)."""
    return day_start(day + dt.timedelta(days=1))


def week_boundaries(as_of: dt.datetime) -> dict[str, dt.datetime]:
    """``b1`` .. ``b10`` = T − 7k days: week k is [b(k+1), b(k)) with b0 = T."""
    return {f"b{k}": as_of - k * WEEK for k in range(1, 11)}


class InvalidRunRequest(ValueError):
    """A run config that cannot succeed, however often it is retried."""


def requested_users(user_ids: Optional[Sequence[str]]) -> Optional[list[str]]:
    """The ad-hoc ``user_ids`` of a run, stripped, de-duplicated and sorted (None: the
    whole partition); an empty list is an :class:`InvalidRunRequest`."""
    if user_ids is None:
        return None
    users = sorted({u.strip() for u in user_ids if u and u.strip()})
    if not users:
        raise InvalidRunRequest("user_ids is empty: omit it to recompute the whole partition.")
    return users


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing columns: {', '.join(missing)}")


def compute_signals(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Per-user aggregates -> one row per user with the seven signals and three counts."""
    _require(aggregates, AGGREGATE_COLUMNS, "aggregates")
    agg = aggregates.reset_index(drop=True)
    active = np.column_stack(
        [pd.to_numeric(agg[c], errors="coerce").fillna(0).to_numpy() > 0 for c in WEEK_COLUMNS]
    ) if len(agg) else np.zeros((0, WEEKS_NEEDED), dtype=bool)
    max_fg = pd.to_numeric(agg["max_aligned_foreground_ms"], errors="coerce").fillna(0).to_numpy()
    sessions0 = pd.to_numeric(agg["max_app_sessions_week0"], errors="coerce").fillna(0).to_numpy()

    out = pd.DataFrame({"user_id": agg["user_id"].astype(str)})
    out["goal_setting_completed"] = agg["has_goal"].fillna(False).astype(bool).to_numpy()
    out["customer_app_registration_completed"] = (max_fg >= REGISTRATION_FOREGROUND_MS) | (
        sessions0 >= REGISTRATION_SESSIONS_WEEK0
    )
    out["customer_app_login_completed"] = max_fg >= LOGIN_FOREGROUND_MS
    out["customer_app_engaged"] = active[:, :ENGAGED_WEEKS].all(axis=1)
    out["customer_app_engagement_dropoff"] = active[:, 1] & ~active[:, 0]
    out["customer_app_retained"] = active[:, :RETAINED_WEEKS].all(axis=1)
    out["customer_app_retained_dropoff"] = active[:, 1:WEEKS_NEEDED].all(axis=1) & ~active[:, 0]
    for column in SIGNAL_COUNTS:
        out[column] = pd.to_numeric(agg[column], errors="coerce").fillna(0).astype("int64").to_numpy()
    return out[list(SIGNAL_COLUMNS)]


def compute_milestones(inputs: pd.DataFrame) -> pd.DataFrame:
    """Signals + tier flags per user -> one row per user with the eleven milestones."""
    _require(inputs, MILESTONE_INPUT_COLUMNS, "milestone inputs")
    frame = inputs.reset_index(drop=True)

    def flag(column: str) -> np.ndarray:
        return frame[column].fillna(False).astype(bool).to_numpy()

    goal = flag("goal_setting_completed")
    out = pd.DataFrame({"user_id": frame["user_id"].astype(str)})
    out["goal_setting_complete"] = goal
    for k in TIERS:
        has_tier = flag(f"has_tier{k}_event")
        for name, signal in _MILESTONE_SIGNAL.items():
            out[f"tier{k}_{name}"] = goal & flag(signal) & has_tier
    return out[list(MILESTONE_COLUMNS)]


# ------------------------------------------------------------------------------ documents
EVENT_COLUMNS = (
    "document_path",
    "user_id",
    "event_id",
    "app_id",
    "foreground_time_ms",
    "session_id",
    "event_timestamp",
)

# foreground_time_ms is stored as BIGINT
_MAX_FOREGROUND_MS = 2**63 - 1


@dataclass
class SplitDocuments:
    valid: list[dict] = field(default_factory=list)  # rows with EVENT_COLUMNS
    rejects: list[dict] = field(default_factory=list)  # document_path, user_id, event_id, reasons, raw_fields, event_timestamp
    out_of_scope: int = 0


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return repr(value)


def raw_fields_json(fields: dict) -> str:
    """The document's fields as JSON text (for the rejects table)."""
    return json.dumps(fields, default=_json_default, sort_keys=True)


def _is_nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _foreground_ms(value: Any) -> tuple[int | None, str | None]:
    """(value as int, None) or (None, reason)."""
    if value is None:
        return None, "foreground_time_ms is missing"
    if isinstance(value, bool):
        return None, "foreground_time_ms is a boolean, not an integer"
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None, f"foreground_time_ms is not an integer ({value!r})"
        number = int(value)
    else:
        return None, f"foreground_time_ms has type {type(value).__name__}, not integer"
    if number < 0:
        return None, f"foreground_time_ms is negative ({number})"
    if number > _MAX_FOREGROUND_MS:
        return None, "foreground_time_ms is out of range"
    return number, None


def validate_document(doc: dict) -> tuple[dict | None, list[str]]:
    """(event row, []) for a valid document, else (None, reasons)."""
    fields = doc.get("fields") if isinstance(doc.get("fields"), dict) else {}
    reasons: list[str] = []
    if not _is_nonempty_str(doc.get("user_id")):
        reasons.append("user id (parent document id) is empty")
    app_id = fields.get("app_id")
    if app_id is None:
        reasons.append("app_id is missing")
    elif not _is_nonempty_str(app_id):
        reasons.append(f"app_id is not a non-empty string ({type(app_id).__name__})")
    session_id = fields.get("session_id")
    if session_id is None:
        reasons.append("session_id is missing")
    elif not _is_nonempty_str(session_id):
        reasons.append(f"session_id is not a non-empty string ({type(session_id).__name__})")
    foreground, reason = _foreground_ms(fields.get("foreground_time_ms"))
    if reason:
        reasons.append(reason)
    timestamp = fields.get("timestamp")
    if timestamp is None:
        reasons.append("timestamp is missing")
    elif not isinstance(timestamp, dt.datetime) or timestamp.tzinfo is None:
        reasons.append(f"timestamp is not a timestamp ({type(timestamp).__name__})")
    if reasons:
        return None, reasons
    return {
        "document_path": doc["path"],
        "user_id": doc["user_id"],
        "event_id": doc["event_id"],
        "app_id": app_id,
        "foreground_time_ms": foreground,
        "session_id": session_id,
        "event_timestamp": timestamp.astimezone(UTC),
    }, []


def in_scope(path: str, root_collection: str, events_subcollection: str) -> bool:
    parts = path.strip("/").split("/")
    return (
        len(parts) == 4
        and parts[0] == root_collection
        and parts[2] == events_subcollection
        and all(p != "" for p in parts)
    )


def split_documents(
    documents: Iterable[dict], root_collection: str, events_subcollection: str
) -> SplitDocuments:
    """Partition raw documents into valid event rows, rejects (with reasons) and a count of
    documents outside ``{root}/{userId}/{events}/{eventId}``."""
    out = SplitDocuments()
    for doc in documents:
        if not in_scope(doc.get("path", ""), root_collection, events_subcollection):
            out.out_of_scope += 1
            continue
        row, reasons = validate_document(doc)
        if row is not None:
            out.valid.append(row)
            continue
        fields = doc.get("fields") if isinstance(doc.get("fields"), dict) else {}
        ts = fields.get("timestamp")
        out.rejects.append(
            {
                "document_path": doc["path"],
                "user_id": doc.get("user_id") or None,
                "event_id": doc.get("event_id") or None,
                "reasons": "; ".join(reasons),
                "raw_fields": raw_fields_json(fields),
                "event_timestamp": ts if isinstance(ts, dt.datetime) and ts.tzinfo else None,
            }
        )
    return out
