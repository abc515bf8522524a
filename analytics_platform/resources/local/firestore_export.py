"""Local stand-in of Firestore: event documents from a JSON-lines export file.

One document per line, ``{"path": "app_usage_events/u1/events/e1", "fields": {...}}``
(a line without ``fields`` holds the fields itself) with ``timestamp`` as an ISO-8601
string; a later line for the same path replaces an earlier one.  Reads behave like the
collection-group query of the real client: (timestamp, path) order, documents without a
valid timestamp are counted, not returned.  ``write_local_export`` (demo and tests) writes
such a file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from dagster import get_dagster_logger

from analytics_platform.resources.firestore import (
    EventCursor,
    EventPage,
    FirestoreMode,
    FirestoreService,
    UntimedCounts,
    as_utc,
    iso_timestamp,
    parse_iso_timestamp,
    path_key,
    split_path,
)


def write_local_export(path: str | Path, documents: Iterable[dict], append: bool = False) -> int:
    """Write documents in the local export format (for the demo and tests).

    Each document is ``{"path": ..., "fields": {...}}``; datetime values are written as
    ISO-8601 UTC strings. Returns the number of lines written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def encode(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return iso_timestamp(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    n = 0
    with target.open("a" if append else "w", encoding="utf-8") as fh:
        for doc in documents:
            fh.write(json.dumps({"path": doc["path"], "fields": doc["fields"]}, default=encode))
            fh.write("\n")
            n += 1
    return n


class LocalFirestore(FirestoreService):
    """Event documents from the local JSON-lines export (Firestore not configured, local)."""

    local_export_path: str = ".analytics_data/firestore/events.jsonl"

    @property
    def mode(self) -> FirestoreMode:
        return "local_export"

    def _source_where(self) -> str:
        return "local-export"

    def describe(self) -> str:
        return f"local export {self.local_export_path}"

    def _local_documents(self) -> tuple[list[dict], int]:
        """(documents with a valid timestamp, count of lines without one) of the export."""
        path = Path(self.local_export_path)
        if not path.exists():
            # an absent export is not an empty one: computing on it would give every user
            # zero events, silently
            raise FileNotFoundError(
                f"The local Firestore export {path} does not exist: create it (python -m "
                "analytics_platform.demo --domain engagement) or configure Firestore "
                "(FIRESTORE_EMULATOR_HOST, FIREBASE_PROJECT_ID, FIREBASE_CREDENTIALS_FILE)."
            )
        by_path: dict[str, dict] = {}
        untimed = 0
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    get_dagster_logger().warning("%s:%d is not JSON: skipped", path, line_no)
                    untimed += 1
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                    untimed += 1
                    continue
                fields = record.get("fields")
                if not isinstance(fields, dict):
                    fields = {k: v for k, v in record.items() if k != "path"}
                fields = dict(fields)
                ts = parse_iso_timestamp(fields.get("timestamp"))
                if ts is None:  # like Firestore: not returned by a timestamp-ordered query
                    untimed += 1
                    continue
                fields["timestamp"] = ts
                doc_path = record["path"].strip("/")
                parts = doc_path.split("/")
                # a collection-group query on the events sub-collection
                if len(parts) < 2 or len(parts) % 2 or parts[-2] != self.events_subcollection:
                    continue
                user_id, event_id = split_path(doc_path)
                # a path is one document: a later line replaces an earlier one
                by_path[doc_path] = {"path": doc_path, "user_id": user_id, "event_id": event_id, "fields": fields}
        documents = list(by_path.values())
        documents.sort(key=lambda d: (d["fields"]["timestamp"], path_key(d["path"])))
        return documents, untimed

    def _pages(self, after, lower, upper, page_size, max_documents) -> Iterator[EventPage]:
        documents, _ = self._local_documents()
        selected = [
            d for d in documents
            if d["fields"]["timestamp"] >= lower
            and (upper is None or d["fields"]["timestamp"] < upper)
            and (after is None or (d["fields"]["timestamp"], path_key(d["path"])) > after.key())
        ]
        if max_documents is not None:
            selected = selected[: max(max_documents, 0)]
        for start in range(0, len(selected), page_size):
            chunk = selected[start:start + page_size]
            last = chunk[-1]
            yield EventPage(documents=chunk, cursor=EventCursor(last["fields"]["timestamp"], last["path"]))

    def count_untimed_documents(
        self, until: Optional[dt.datetime] = None, timeout: Optional[float] = None
    ) -> UntimedCounts:
        upper = as_utc(until) if until else None
        documents, untimed = self._local_documents()
        future = sum(1 for d in documents if upper is not None and d["fields"]["timestamp"] >= upper)
        return UntimedCounts(without_valid_timestamp=untimed, future_dated=future)

    def write_documents(self, documents: Iterable[dict]) -> int:
        """Append the documents to the export."""
        return write_local_export(self.local_export_path, documents, append=True)
