"""Firestore event documents: firebase-admin (credentials | default) | emulator | local export.

Layout: ``{root_collection}/{userId}/{events_subcollection}/{eventId}`` (default
``app_usage_events/{userId}/events/{eventId}``); the user id is the parent document id.

Which backend is used depends only on the resource's fields (``build_resources`` fills
them from the settings, the one reader of the environment):

* ``emulator_host`` set -> the Firestore emulator with an anonymous credential (project
  ``project_id`` or ``demo-analytics-platform``);
* ``credentials_file`` or ``service_account_json`` set -> firebase-admin with that service
  account (project from ``project_id``, else from the service account);
* only ``project_id`` set -> firebase-admin with Application Default Credentials;
* nothing set -> (``local`` only) the JSON-lines export at ``local_export_path``: one
  document per line, ``{"path": "app_usage_events/u1/events/e1", "fields": {...}}`` with
  ``timestamp`` as an ISO-8601 UTC string. ``require_configured`` (prod) turns this case
  into a set-up failure naming the variables to set.

The read API is incremental: :meth:`FirestoreResource.iter_event_pages` runs ONE
collection-group query over every ``events_subcollection`` ordered by
(``timestamp``, ``__name__``), starting after a persisted :class:`EventCursor`, in pages
(``limit`` + ``start_after`` the last document of the previous page). Each document is read
once; the caller validates the raw documents and persists the cursor with the data.

The query filters ``timestamp`` to the timestamp type (a range ``>=``): Firestore leaves a
document whose ordered field is missing out of such a query, and a range filter only
matches values of its own type, so documents without a valid ``timestamp`` never reach
the cursor (they would otherwise stall or skip it). They are counted with cheap
aggregation queries instead (:meth:`FirestoreResource.count_untimed_documents`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional

from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field, PrivateAttr

from analytics_platform.settings import SettingsError

UTC = dt.timezone.utc
EMULATOR_HOST_VAR = "FIRESTORE_EMULATOR_HOST"  # read by google-cloud-firestore's Client()
DEFAULT_EMULATOR_PROJECT = "demo-analytics-platform"
# The smallest Firestore timestamp: a range filter from here matches every timestamp value
# (and only timestamp values).
MIN_TIMESTAMP = dt.datetime(1, 1, 1, tzinfo=UTC)
_ENV_LOCK = threading.Lock()

FirestoreMode = Literal["emulator", "firebase", "local_export"]


def path_key(path: str) -> tuple[str, ...]:
    """Sort key of a document path in Firestore's ``__name__`` order: segment by segment
    (code-point order = UTF-8 byte order), not as one string."""
    return tuple(path.strip("/").split("/"))


@dataclass(frozen=True)
class EventCursor:
    """A position in the (timestamp, document path) order of the event documents."""

    timestamp: dt.datetime  # aware, UTC
    path: str  # e.g. "app_usage_events/u1/events/e1"

    def key(self) -> tuple:
        return (_as_utc(self.timestamp), path_key(self.path))


@dataclass
class EventPage:
    """One page of raw documents and the cursor just after its last document."""

    documents: list[dict]  # {"path", "user_id", "event_id", "fields"}
    cursor: EventCursor


@dataclass
class UntimedCounts:
    """Documents of the collection group that the timestamp-ordered read cannot return."""

    without_valid_timestamp: int  # missing, or not a Firestore timestamp
    future_dated: int  # timestamp at or after the read's upper bound (read later)


def _as_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _plain_datetime(value: dt.datetime) -> dt.datetime:
    """Firestore's DatetimeWithNanoseconds -> a plain aware UTC datetime."""
    value = _as_utc(value)
    return dt.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, tzinfo=UTC,
    )


def parse_iso_timestamp(value: Any) -> Optional[dt.datetime]:
    """ISO-8601 string (``Z`` or offset; none = UTC) -> aware UTC datetime, else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return _as_utc(parsed)


def iso_timestamp(value: dt.datetime) -> str:
    """Aware datetime -> ISO-8601 UTC with microseconds and ``Z`` (the export format)."""
    value = _as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}Z"


def _split_path(path: str) -> tuple[str, str]:
    """(user_id = parent document id, event_id = document id) of an event document path."""
    parts = path.strip("/").split("/")
    event_id = parts[-1] if parts else ""
    user_id = parts[-3] if len(parts) >= 3 else ""
    return user_id, event_id


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


class FirestoreResource(ConfigurableResource):
    """Event documents from Firestore (or the emulator, or a local JSON-lines export)."""

    project_id: Optional[str] = Field(default=None, description="FIREBASE_PROJECT_ID")
    emulator_host: Optional[str] = Field(default=None, description="FIRESTORE_EMULATOR_HOST (host:port)")
    credentials_file: Optional[str] = Field(default=None, description="FIREBASE_CREDENTIALS_FILE")
    service_account_json: Optional[str] = Field(
        default=None, description="FIREBASE_SERVICE_ACCOUNT_JSON (secret: pass as EnvVar)"
    )
    root_collection: str = "app_usage_events"
    events_subcollection: str = "events"
    local_export_path: str = ".analytics_data/firestore/events.jsonl"
    require_configured: bool = Field(
        default=False, description="prod: fail at set-up when Firestore is not configured"
    )

    _client: Any = PrivateAttr(default=None)

    # ------------------------------------------------------------------ configuration
    @property
    def mode(self) -> FirestoreMode:
        if self.emulator_host:
            return "emulator"
        if self.credentials_file or self.service_account_json or self.project_id:
            return "firebase"
        return "local_export"

    def check_configured(self) -> None:
        """Fail fast (naming the variables) on a missing or unusable configuration."""
        if self.mode == "local_export":
            if self.require_configured:
                raise SettingsError(
                    "ANALYTICS_ENV=prod needs Firestore access: set FIREBASE_PROJECT_ID "
                    "(Application Default Credentials) and/or FIREBASE_CREDENTIALS_FILE or "
                    "FIREBASE_SERVICE_ACCOUNT_JSON (or FIRESTORE_EMULATOR_HOST for an emulator)."
                )
            return
        if self.mode == "emulator":
            return
        if self.credentials_file and not Path(self.credentials_file).is_file():
            raise SettingsError(
                f"FIREBASE_CREDENTIALS_FILE points at {self.credentials_file!r}, which is not a file."
            )
        if self.service_account_json and not self.credentials_file:
            try:
                info = json.loads(self.service_account_json)
            except ValueError:
                info = None
            if not isinstance(info, dict):
                # never echo the value: it is a secret
                raise SettingsError("FIREBASE_SERVICE_ACCOUNT_JSON is not a JSON object (service account key).")

    def setup_for_execution(self, context) -> None:
        self.check_configured()

    @property
    def source_name(self) -> str:
        """A stable, non-secret name of the event collection group (the cursor's key)."""
        project = self.project_id or (DEFAULT_EMULATOR_PROJECT if self.mode == "emulator" else None)
        where = "local-export" if self.mode == "local_export" else (project or "default-project")
        return f"firestore:{where}:{self.root_collection}/*/{self.events_subcollection}"

    def describe(self) -> str:
        """Where the documents come from, for logs and metadata (never a secret)."""
        if self.mode == "emulator":
            return f"Firestore emulator {self.emulator_host} (project {self.project_id or DEFAULT_EMULATOR_PROJECT})"
        if self.mode == "firebase":
            how = "service account file" if self.credentials_file else (
                "service account JSON" if self.service_account_json else "application default credentials"
            )
            return f"Firestore project {self.project_id or '(from credentials)'} via {how}"
        return f"local export {self.local_export_path}"

    # ------------------------------------------------------------------ client
    def _app_name(self) -> str:
        fingerprint = hashlib.sha256(
            "|".join(
                [self.mode, self.project_id or "", self.emulator_host or "", self.credentials_file or "",
                 self.service_account_json or ""]
            ).encode()
        ).hexdigest()[:16]
        return f"analytics_platform:{self.mode}:{self.project_id or '-'}:{fingerprint}"

    def _credential(self):
        from firebase_admin import credentials

        if self.mode == "emulator":
            from google.auth.credentials import AnonymousCredentials

            class _AnonymousCredential(credentials.Base):
                def get_credential(self):
                    return AnonymousCredentials()

            return _AnonymousCredential()
        if self.credentials_file:
            return credentials.Certificate(self.credentials_file)
        if self.service_account_json:
            return credentials.Certificate(json.loads(self.service_account_json))
        return credentials.ApplicationDefault()

    @contextmanager
    def _client_environment(self) -> Iterator[None]:
        """FIRESTORE_EMULATOR_HOST = this resource's emulator host (or unset) while the
        client is constructed: google-cloud-firestore reads it only then."""
        with _ENV_LOCK:
            previous = os.environ.get(EMULATOR_HOST_VAR)
            if self.emulator_host:
                os.environ[EMULATOR_HOST_VAR] = self.emulator_host
            else:
                os.environ.pop(EMULATOR_HOST_VAR, None)
            try:
                yield
            finally:
                if previous is None:
                    os.environ.pop(EMULATOR_HOST_VAR, None)
                else:
                    os.environ[EMULATOR_HOST_VAR] = previous

    def get_client(self):
        """The ``google.cloud.firestore.Client`` of a firebase-admin app named after this
        configuration (so different projects in one process never clash)."""
        if self.mode == "local_export":
            raise RuntimeError("Firestore is not configured: reading the local export instead")
        if self._client is not None:
            return self._client
        self.check_configured()
        import firebase_admin
        from firebase_admin import firestore

        name = self._app_name()
        try:
            app = firebase_admin.get_app(name)
        except ValueError:
            options = {}
            project = self.project_id or (DEFAULT_EMULATOR_PROJECT if self.mode == "emulator" else None)
            if project:
                options["projectId"] = project
            app = firebase_admin.initialize_app(self._credential(), options, name=name)
        with self._client_environment():
            client = firestore.client(app)
        if getattr(client, "_emulator_host", None) != (self.emulator_host or None):
            raise RuntimeError(f"the cached Firestore client of app {name} points elsewhere")
        self._client = client
        return client

    # ------------------------------------------------------------------ reads
    def iter_event_pages(
        self,
        after: Optional[EventCursor] = None,
        *,
        since: Optional[dt.datetime] = None,
        until: Optional[dt.datetime] = None,
        page_size: int = 1000,
        max_documents: Optional[int] = None,
    ) -> Iterator[EventPage]:
        """Event documents in (timestamp, path) order, strictly after ``after``, with
        ``since <= timestamp < until``; in pages of ``page_size``.

        One collection-group query (never one per user); each page starts after the last
        document of the previous one. Documents are raw: ``{"path", "user_id", "event_id",
        "fields"}`` with ``fields["timestamp"]`` an aware UTC datetime.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        lower = _as_utc(since) if since else MIN_TIMESTAMP
        if after is not None and _as_utc(after.timestamp) > lower:
            lower = _as_utc(after.timestamp)
        upper = _as_utc(until) if until else None
        reader = self._local_pages if self.mode == "local_export" else self._firestore_pages
        yield from reader(after, lower, upper, page_size, max_documents)

    def _firestore_pages(self, after, lower, upper, page_size, max_documents) -> Iterator[EventPage]:
        from google.api_core import retry as api_retry
        from google.cloud.firestore_v1.base_query import FieldFilter

        client = self.get_client()
        query = client.collection_group(self.events_subcollection).where(
            filter=FieldFilter("timestamp", ">=", lower)
        )
        if upper is not None:
            query = query.where(filter=FieldFilter("timestamp", "<", upper))
        query = query.order_by("timestamp").order_by("__name__")
        retry = api_retry.Retry(initial=1.0, maximum=30.0, multiplier=2.0, timeout=300.0)
        position = after
        read = 0
        while True:
            limit = page_size if max_documents is None else min(page_size, max_documents - read)
            if limit <= 0:
                return
            page_query = query.limit(limit)
            if position is not None:
                page_query = page_query.start_after(
                    {"timestamp": position.timestamp, "__name__": client.document(position.path)}
                )
            snapshots = list(page_query.stream(retry=retry, timeout=120.0))
            if not snapshots:
                return
            documents = []
            for snap in snapshots:
                fields = snap.to_dict() or {}
                fields["timestamp"] = _plain_datetime(fields["timestamp"])
                path = snap.reference.path
                user_id, event_id = _split_path(path)
                documents.append({"path": path, "user_id": user_id, "event_id": event_id, "fields": fields})
            last = documents[-1]
            position = EventCursor(last["fields"]["timestamp"], last["path"])
            read += len(documents)
            yield EventPage(documents=documents, cursor=position)
            if len(snapshots) < limit:
                return

    def _local_documents(self) -> tuple[list[dict], int]:
        """(documents with a valid timestamp, count of lines without one) of the export."""
        path = Path(self.local_export_path)
        if not path.exists():
            get_dagster_logger().warning("Local Firestore export %s does not exist: no documents", path)
            return [], 0
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
                user_id, event_id = _split_path(doc_path)
                # a path is one document: a later line replaces an earlier one
                by_path[doc_path] = {"path": doc_path, "user_id": user_id, "event_id": event_id, "fields": fields}
        documents = list(by_path.values())
        documents.sort(key=lambda d: (d["fields"]["timestamp"], path_key(d["path"])))
        return documents, untimed

    def _local_pages(self, after, lower, upper, page_size, max_documents) -> Iterator[EventPage]:
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

    def count_untimed_documents(self, until: Optional[dt.datetime] = None) -> UntimedCounts:
        """Count the documents a timestamp-ordered read cannot return (aggregation queries:
        billed one read per 1,000 index entries, no document is fetched)."""
        upper = _as_utc(until) if until else None
        if self.mode == "local_export":
            documents, untimed = self._local_documents()
            future = sum(1 for d in documents if upper is not None and d["fields"]["timestamp"] >= upper)
            return UntimedCounts(without_valid_timestamp=untimed, future_dated=future)
        from google.cloud.firestore_v1.base_query import FieldFilter

        group = self.get_client().collection_group(self.events_subcollection)

        def count(query) -> int:
            result = query.count(alias="n").get()
            return int(result[0][0].value)

        total = count(group)
        timed = count(group.where(filter=FieldFilter("timestamp", ">=", MIN_TIMESTAMP)))
        future = count(group.where(filter=FieldFilter("timestamp", ">=", upper))) if upper else 0
        return UntimedCounts(without_valid_timestamp=max(total - timed, 0), future_dated=future)

    # ------------------------------------------------------------------ writes (demo/tests)
    def write_documents(self, documents: Iterable[dict]) -> int:
        """Write ``{"path", "fields"}`` documents (batched). The demo and tests use this;
        the platform itself never writes to Firestore."""
        if self.mode == "local_export":
            return write_local_export(self.local_export_path, documents, append=True)
        client = self.get_client()
        n = 0
        batch = client.batch()
        for doc in documents:
            batch.set(client.document(doc["path"]), doc["fields"])
            n += 1
            if n % 400 == 0:
                batch.commit()
                batch = client.batch()
        batch.commit()
        return n
