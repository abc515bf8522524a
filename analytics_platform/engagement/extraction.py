"""Validation of raw Firestore event documents (pure: no Dagster, no I/O).

A raw document is what ``FirestoreResource.iter_event_pages`` yields:
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
from typing import Any, Iterable

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
        "event_timestamp": timestamp.astimezone(dt.timezone.utc),
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
