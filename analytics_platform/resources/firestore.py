"""Firestore event documents: the interface of the ``firestore`` resource and the real client.

Layout: ``{root_collection}/{userId}/{events_subcollection}/{eventId}`` (default
``app_usage_events/{userId}/events/{eventId}``); the user id is the parent document id.

:class:`FirestoreService` is what assets type against.  Implementations (``build_resources``
picks one from the settings, the one reader of the environment):

* :class:`FirestoreResource` (here), firebase-admin:
  - ``emulator_host`` set -> the Firestore emulator with an anonymous credential (project
    ``project_id`` or ``demo-analytics-platform``);
  - ``credentials_file`` or ``service_account_json`` set -> that service account (project
    from ``project_id``, else from the service account);
  - only ``project_id`` set -> Application Default Credentials;
  - nothing set -> a set-up failure naming the variables to set;
* :class:`~analytics_platform.resources.local.firestore_export.LocalFirestore`, the local
  stand-in: the JSON-lines export at ``local_export_path``, one document per line,
  ``{"path": "app_usage_events/u1/events/e1", "fields": {...}}`` with ``timestamp`` as an
  ISO-8601 UTC string.

The read API is incremental: :meth:`FirestoreService.iter_event_pages` runs ONE
collection-group query over every ``events_subcollection`` ordered by
(``timestamp``, ``__name__``), starting after a persisted :class:`EventCursor`, in pages
(``limit`` + ``start_after`` the last document of the previous page). Each document is read
once; the caller validates the raw documents and persists the cursor with the data.

The query filters ``timestamp`` to the timestamp type (a range ``>=``): Firestore leaves a
document whose ordered field is missing out of such a query, and a range filter only
matches values of its own type, so documents without a valid ``timestamp`` never reach
the cursor (they would otherwise stall or skip it). They are counted with cheap
aggregation queries instead (:meth:`FirestoreService.count_untimed_documents`).
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

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from analytics_platform.common import UTC, as_utc
from analytics_platform.settings import SettingsError

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
        return (as_utc(self.timestamp), path_key(self.path))


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


def _plain_datetime(value: dt.datetime) -> dt.datetime:
    """Firestore's DatetimeWithNanoseconds -> a plain aware UTC datetime."""
    value = as_utc(value)
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
    return as_utc(parsed)


def iso_timestamp(value: dt.datetime) -> str:
    """Aware datetime -> ISO-8601 UTC with microseconds and ``Z`` (the export format)."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}Z"


def split_path(path: str) -> tuple[str, str]:
    """(user_id = parent document id, event_id = document id) of an event document path."""
    parts = path.strip("/").split("/")
    event_id = parts[-1] if parts else ""
    user_id = parts[-3] if len(parts) >= 3 else ""
    return user_id, event_id


class FirestoreService(ConfigurableResource):
    """The ``firestore`` resource's interface: event documents in (timestamp, path) order."""

    root_collection: str = "app_usage_events"
    events_subcollection: str = "events"

    # ------------------------------------------------------------------ configuration
    @property
    def mode(self) -> FirestoreMode:
        raise NotImplementedError

    def check_configured(self) -> None:
        """Fail fast (naming the variables) on a missing or unusable configuration."""

    def setup_for_execution(self, context) -> None:
        self.check_configured()

    def _source_where(self) -> str:
        raise NotImplementedError

    @property
    def source_name(self) -> str:
        """A stable, non-secret name of the event collection group (the cursor's key)."""
        return f"firestore:{self._source_where()}:{self.root_collection}/*/{self.events_subcollection}"

    def describe(self) -> str:
        """Where the documents come from, for logs and metadata (never a secret)."""
        raise NotImplementedError

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
        lower = as_utc(since) if since else MIN_TIMESTAMP
        if after is not None and as_utc(after.timestamp) > lower:
            lower = as_utc(after.timestamp)
        upper = as_utc(until) if until else None
        yield from self._pages(after, lower, upper, page_size, max_documents)

    def _pages(self, after, lower, upper, page_size, max_documents) -> Iterator[EventPage]:
        raise NotImplementedError

    def count_untimed_documents(
        self, until: Optional[dt.datetime] = None, timeout: Optional[float] = None
    ) -> UntimedCounts:
        """Count the documents a timestamp-ordered read cannot return, within ``timeout``
        seconds per query (None: the client's default); raises on a failure or timeout."""
        raise NotImplementedError

    # ------------------------------------------------------------------ writes (demo/tests)
    def write_documents(self, documents: Iterable[dict]) -> int:
        """Add ``{"path", "fields"}`` documents. The demo and tests use this; the platform
        itself never writes to Firestore."""
        raise NotImplementedError


class FirestoreResource(FirestoreService):
    """Event documents from Firestore or its emulator (firebase-admin)."""

    project_id: Optional[str] = Field(default=None, description="FIREBASE_PROJECT_ID")
    emulator_host: Optional[str] = Field(default=None, description="FIRESTORE_EMULATOR_HOST (host:port)")
    credentials_file: Optional[str] = Field(default=None, description="FIREBASE_CREDENTIALS_FILE")
    service_account_json: Optional[str] = Field(
        default=None, description="FIREBASE_SERVICE_ACCOUNT_JSON (secret: pass as EnvVar)"
    )
    read_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long one page read keeps retrying transient errors (unreachable, 503) before it fails.",
    )

    _client: Any = PrivateAttr(default=None)

    # ------------------------------------------------------------------ configuration
    @property
    def mode(self) -> FirestoreMode:
        return "emulator" if self.emulator_host else "firebase"

    def check_configured(self) -> None:
        if self.mode == "emulator":
            return
        if not (self.credentials_file or self.service_account_json or self.project_id):
            raise SettingsError(
                "ANALYTICS_ENV=prod needs Firestore access: set FIREBASE_PROJECT_ID "
                "(Application Default Credentials) and/or FIREBASE_CREDENTIALS_FILE or "
                "FIREBASE_SERVICE_ACCOUNT_JSON (or FIRESTORE_EMULATOR_HOST for an emulator)."
            )
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

    def _project(self) -> Optional[str]:
        return self.project_id or (DEFAULT_EMULATOR_PROJECT if self.mode == "emulator" else None)

    def _source_where(self) -> str:
        return self._project() or "default-project"

    def describe(self) -> str:
        if self.mode == "emulator":
            return f"Firestore emulator {self.emulator_host} (project {self._project()})"
        how = "service account file" if self.credentials_file else (
            "service account JSON" if self.service_account_json else "application default credentials"
        )
        return f"Firestore project {self.project_id or '(from credentials)'} via {how}"

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
            project = self._project()
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
    def _pages(self, after, lower, upper, page_size, max_documents) -> Iterator[EventPage]:
        from google.api_core import retry as api_retry
        from google.cloud.firestore_v1.base_query import FieldFilter

        client = self.get_client()
        query = client.collection_group(self.events_subcollection).where(
            filter=FieldFilter("timestamp", ">=", lower)
        )
        if upper is not None:
            query = query.where(filter=FieldFilter("timestamp", "<", upper))
        query = query.order_by("timestamp").order_by("__name__")
        retry = api_retry.Retry(
            initial=1.0, maximum=30.0, multiplier=2.0, timeout=self.read_timeout_seconds
        )
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
            snapshots = list(page_query.stream(retry=retry, timeout=min(120.0, self.read_timeout_seconds)))
            if not snapshots:
                return
            documents = []
            for snap in snapshots:
                fields = snap.to_dict() or {}
                fields["timestamp"] = _plain_datetime(fields["timestamp"])
                path = snap.reference.path
                user_id, event_id = split_path(path)
                documents.append({"path": path, "user_id": user_id, "event_id": event_id, "fields": fields})
            last = documents[-1]
            position = EventCursor(last["fields"]["timestamp"], last["path"])
            read += len(documents)
            yield EventPage(documents=documents, cursor=position)
            if len(snapshots) < limit:
                return

    def count_untimed_documents(
        self, until: Optional[dt.datetime] = None, timeout: Optional[float] = None
    ) -> UntimedCounts:
        """Aggregation queries: billed one read per 1,000 index entries, no document is
        fetched. Each query is bounded by ``timeout`` seconds and not retried."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        upper = as_utc(until) if until else None
        group = self.get_client().collection_group(self.events_subcollection)

        def count(query) -> int:
            if timeout is None:
                result = query.count(alias="n").get()
            else:
                result = query.count(alias="n").get(retry=None, timeout=timeout)
            return int(result[0][0].value)

        total = count(group)
        timed = count(group.where(filter=FieldFilter("timestamp", ">=", MIN_TIMESTAMP)))
        future = count(group.where(filter=FieldFilter("timestamp", ">=", upper))) if upper else 0
        return UntimedCounts(without_valid_timestamp=max(total - timed, 0), future_dated=future)

    # ------------------------------------------------------------------ writes (demo/tests)
    def write_documents(self, documents: Iterable[dict]) -> int:
        """Batched ``set`` of each document (400 per commit)."""
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
