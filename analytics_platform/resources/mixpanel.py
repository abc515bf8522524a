"""Mixpanel: the interface of the ``mixpanel`` resource and its real HTTP client.

:class:`MixpanelService` is what assets type against: Raw Event Export streamed to a file
(``export_to_file`` / ``iter_export_lines``) and /engage profile-update batches
(``engage``, ``set_update``, ``unset_update``).  Implementations:

* :class:`MixpanelResource` (here): ``GET {export_url}/api/2.0/export`` with HTTP Basic auth
  (service account ``service_account_username`` + ``service_account_secret`` with
  ``project_id``, or the legacy ``api_secret``; no credentials = no auth, for a local export
  endpoint or a stub) and ``POST {api_url}/engage?verbose=1`` with ``project_token``;
* :class:`~analytics_platform.resources.local.mixpanel_files.LocalMixpanel`: the local
  stand-in (export files under ``ANALYTICS_DATA_DIR``, /engage to the outbox);
* :class:`SplitMixpanel`: export from one of them, /engage to the other.

Which one is used is decided in ``analytics_platform.resources.build_resources`` only.
``require_credentials=True`` (prod) turns every missing credential into a set-up failure
that names the variables.  429, 5xx and connection errors (also mid-stream) are retried with
exponential backoff + full jitter, honouring ``Retry-After``; other 4xx are final.  Every
message and log line is redacted; secrets never leave this module.  With a ``budget``
(``resources/export_budget.py``) every export request, a retry too, first takes a slot of
the export budget shared by all runs (60 per rolling hour, 3 per second).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import orjson
import requests
import urllib3
from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import PrivateAttr

from analytics_platform.resources.export_budget import ExportBudget, ExportBudgetExhausted
from analytics_platform.resources.growing_file import GrowingFile
from analytics_platform.resources.retry import is_retryable_status, parse_retry_after, retry_delay
from analytics_platform.settings import SettingsError, redact

EXPORT_PATH = "/api/2.0/export"
ENGAGE_PATH = "/engage"
MAX_ENGAGE_BATCH = 2000
TOKEN_PLACEHOLDER = "<MIXPANEL_PROJECT_TOKEN>"
CHUNK = 1 << 20  # 1 MiB: large reads keep the per-chunk overhead negligible

_SERVICE_ACCOUNT_VARS = "MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET"
_EXPORT_VARS_HINT = (
    f"{_SERVICE_ACCOUNT_VARS} (with MIXPANEL_PROJECT_ID), or MIXPANEL_API_SECRET"
)

DateLike = Union[str, dt.date]
_log = get_dagster_logger("mixpanel")


class MixpanelError(RuntimeError):
    """A Mixpanel request failed for good (message redacted)."""


class MixpanelAuthError(MixpanelError):
    """Mixpanel rejected the credentials (401/403); the message names what to fix."""


class MixpanelBudgetError(MixpanelError):
    """No export budget within the wait cap (the message says when it frees)."""


@dataclass(frozen=True)
class ExportStats:
    """What one export wrote: ``path`` holds ``lines`` JSON lines (``bytes`` decompressed)."""

    path: Path
    lines: int
    bytes: int
    requests: int  # HTTP requests made for this export (0 for local files)
    source: str  # "http" or "local"
    elapsed_seconds: float
    waited_seconds: float  # time spent in backoff / Retry-After
    budget_waited_seconds: float = 0.0  # time spent waiting for the export budget


@dataclass(frozen=True)
class EngageResult:
    """Outcome of one /engage batch; a rejected batch is ``ok=False`` (never raised)."""

    ok: bool
    updates: int
    requests: int
    destination: str  # "http" or "outbox"
    status_code: Optional[int] = None
    error: Optional[str] = None


def build_set_update(
    token: Optional[str], distinct_id: str, props: dict, *, ignore_time: bool = False
) -> dict:
    """A ``$set`` profile update for /engage."""
    update = {"$token": token, "$distinct_id": distinct_id, "$set": dict(props)}
    if ignore_time:
        update["$ignore_time"] = True
    return update


def build_unset_update(
    token: Optional[str], distinct_id: str, names: Iterable[str], *, ignore_time: bool = False
) -> dict:
    """An ``$unset`` profile update removing the properties ``names``."""
    update = {"$token": token, "$distinct_id": distinct_id, "$unset": list(names)}
    if ignore_time:
        update["$ignore_time"] = True
    return update


def day_of(value: DateLike) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def days_between(from_date: dt.date, to_date: dt.date) -> Iterator[dt.date]:
    day = from_date
    while day <= to_date:
        yield day
        day += dt.timedelta(days=1)


# Errors that mean "the connection broke": restart the whole request.
_STREAM_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)


class MixpanelService(ConfigurableResource):
    """The ``mixpanel`` resource's interface (assets type against it): export + /engage."""

    # ------------------------------------------------------------------ set-up
    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.check_configuration()

    def check_configuration(self) -> None:
        """Fail fast (SettingsError naming the variables) on an unusable configuration."""

    @property
    def export_mode(self) -> str:
        """``service_account`` | ``legacy_secret`` | ``anonymous_http`` | ``local_files``."""
        raise NotImplementedError

    @property
    def engage_mode(self) -> str:
        """``http`` | ``outbox``: where profile updates go (recorded in metadata)."""
        raise NotImplementedError

    @property
    def requests_made(self) -> int:
        """HTTP requests this resource instance has sent (export + engage, retries included)."""
        return 0

    # ---------------------------------------------------------------- export
    def export_to_file(
        self,
        from_date: DateLike,
        to_date: DateLike,
        events: Optional[Sequence[str]] = None,
        where: Optional[str] = None,
        *,
        dest: Union[str, Path],
        progress: Optional[GrowingFile] = None,
    ) -> ExportStats:
        """Write the raw export of ``[from_date, to_date]`` (UTC, inclusive) into ``dest``
        (JSON lines; ``events=None`` exports every event).  ``dest`` never holds a
        partial export: the file is written to ``dest.part`` and renamed when complete.
        ``progress``: told of every (re)start, flushed write and the completion of the
        ``.part`` file, so that another thread can read it as it grows."""
        raise NotImplementedError

    def iter_export_lines(
        self,
        from_date: DateLike,
        to_date: DateLike,
        events: Optional[Sequence[str]] = None,
        where: Optional[str] = None,
    ) -> Iterator[bytes]:
        """Yield the export's non-empty lines (without newline); goes through a temp file."""
        with tempfile.TemporaryDirectory(prefix="mixpanel_export_") as tmp:
            path = Path(tmp) / "export.jsonl"
            self.export_to_file(from_date, to_date, events, where, dest=path)
            with open(path, "rb") as handle:
                for line in handle:
                    line = line.rstrip(b"\r\n")
                    if line:
                        yield line

    # ---------------------------------------------------------------- engage
    def _update_token(self) -> str:
        """The ``$token`` of updates built by ``set_update`` / ``unset_update``."""
        return TOKEN_PLACEHOLDER

    def set_update(self, distinct_id: str, props: dict, *, ignore_time: bool = False) -> dict:
        """``build_set_update`` with this project's token (or the local placeholder)."""
        return build_set_update(self._update_token(), distinct_id, props, ignore_time=ignore_time)

    def unset_update(self, distinct_id: str, names: Iterable[str], *, ignore_time: bool = False) -> dict:
        """``build_unset_update`` with this project's token (or the local placeholder)."""
        return build_unset_update(self._update_token(), distinct_id, names, ignore_time=ignore_time)

    def engage(self, updates: Sequence[dict]) -> EngageResult:
        """Send one batch (≤ 2000) of profile updates; a rejected batch returns ``ok=False``."""
        self.check_configuration()
        if len(updates) > MAX_ENGAGE_BATCH:
            raise ValueError(
                f"/engage accepts at most {MAX_ENGAGE_BATCH} updates per request, got {len(updates)}"
            )
        if not updates:
            return EngageResult(True, 0, 0, self.engage_mode)
        return self._send_updates(updates)

    def _send_updates(self, updates: Sequence[dict]) -> EngageResult:
        raise NotImplementedError


class MixpanelResource(MixpanelService):
    """The real Mixpanel: Raw Event Export over HTTP (streamed to files) and /engage."""

    export_url: str
    api_url: str
    project_id: Optional[str] = None
    service_account_username: Optional[str] = None
    service_account_secret: Optional[str] = None
    api_secret: Optional[str] = None
    project_token: Optional[str] = None
    require_credentials: bool = False
    max_attempts: int = 8
    backoff_initial_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    # A Retry-After longer than this fails the run instead of sleeping (the hourly budget is
    # spent: the next scheduled tick is the retry); 10 minutes.
    max_retry_after_seconds: float = 600.0
    timeout_seconds: float = 300
    # The export budget shared by every run (resources/export_budget.py): each export
    # request (a retry too) takes a slot first.  None: no budget (a single client).
    budget: Optional[ExportBudget] = None

    _session: Any = PrivateAttr(default=None)
    _checked: bool = PrivateAttr(default=False)
    _counter: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default=None)

    # ------------------------------------------------------------------ set-up
    def check_configuration(self) -> None:
        """Fail fast (SettingsError naming the variables) on missing or half-set credentials."""
        if self._checked:
            return
        problems = []
        if bool(self.service_account_username) != bool(self.service_account_secret):
            missing = (
                "MIXPANEL_SERVICE_ACCOUNT_SECRET"
                if self.service_account_username
                else "MIXPANEL_SERVICE_ACCOUNT_USERNAME"
            )
            problems.append(f"{missing} (the service account needs both {_SERVICE_ACCOUNT_VARS})")
        elif self.service_account_username and not self.project_id:
            problems.append("MIXPANEL_PROJECT_ID (required with service-account auth)")
        if self.require_credentials:
            if not self.has_export_credentials:
                problems.append(f"{_EXPORT_VARS_HINT} (export)")
            if not self.project_token:
                problems.append("MIXPANEL_PROJECT_TOKEN (profile updates)")
        for name, url in (("MIXPANEL_EXPORT_URL", self.export_url), ("MIXPANEL_API_URL", self.api_url)):
            if not url.startswith(("http://", "https://")):
                problems.append(f"{name} (must start with http:// or https://, got {url!r})")
        if self.budget is not None:
            problems.extend(self.budget.configuration_problems())
        if problems:
            raise SettingsError("Mixpanel is not configured: set " + "; ".join(problems) + ".")
        self._checked = True

    @property
    def has_export_credentials(self) -> bool:
        return bool(
            (self.service_account_username and self.service_account_secret) or self.api_secret
        )

    @property
    def export_mode(self) -> str:
        """``service_account`` | ``legacy_secret`` | ``anonymous_http`` (no credentials)."""
        if self.service_account_username and self.service_account_secret:
            return "service_account"
        if self.api_secret:
            return "legacy_secret"
        return "anonymous_http"

    @property
    def engage_mode(self) -> str:
        return "http"

    @property
    def export_endpoint(self) -> str:
        return self.export_url.rstrip("/") + EXPORT_PATH

    @property
    def engage_endpoint(self) -> str:
        return self.api_url.rstrip("/") + ENGAGE_PATH

    @property
    def requests_made(self) -> int:
        return self._count(0)

    # --------------------------------------------------------------- helpers
    def _count(self, n: int = 1) -> int:
        if self._lock is None:
            self._lock = threading.Lock()
            self._counter = 0
        with self._lock:
            self._counter += n
            return self._counter

    def _http(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "analytics-platform/1"
            self._session = session
        return self._session

    def _auth(self) -> Optional[tuple[str, str]]:
        if self.service_account_username and self.service_account_secret:
            return (self.service_account_username, self.service_account_secret)
        if self.api_secret:
            return (self.api_secret, "")
        return None

    def _redact(self, text: str) -> str:
        """``settings.redact`` with this resource's credentials (and their Basic-auth encoding)."""
        secrets = [self.service_account_secret, self.api_secret, self.project_token]
        auth = self._auth()
        if auth:
            secrets.append(base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        return redact(text, also=secrets)

    def _auth_hint(self) -> str:
        mode = self.export_mode
        if mode == "service_account":
            return f"check {_SERVICE_ACCOUNT_VARS} and MIXPANEL_PROJECT_ID"
        if mode == "legacy_secret":
            return "check MIXPANEL_API_SECRET"
        return f"set {_EXPORT_VARS_HINT}"

    def _timeout(self) -> tuple[float, float]:
        return (min(30.0, self.timeout_seconds), self.timeout_seconds)

    def _wait(self, what: str, attempt: int, reason: str, retry_after: Optional[str]) -> float:
        """Sleep before retry ``attempt`` (or raise when attempts are exhausted)."""
        if attempt >= self.max_attempts:
            raise MixpanelError(
                self._redact(f"Mixpanel {what} failed after {attempt} attempts: {reason}")
            )
        asked = parse_retry_after(retry_after)
        if asked is not None and asked > self.max_retry_after_seconds:
            raise MixpanelError(
                f"Mixpanel {what}: {reason} with Retry-After {asked:.0f}s, more than the "
                f"{self.max_retry_after_seconds:.0f}s this run waits (the rate limit of 60 "
                "export queries per hour is spent); not sleeping - the next scheduled run retries."
            )
        delay = retry_delay(
            attempt, self.backoff_initial_seconds, self.backoff_max_seconds, retry_after
        )
        _log.warning(
            self._redact(
                f"Mixpanel {what}: {reason} (attempt {attempt}/{self.max_attempts}); "
                f"retrying in {delay:.2f}s"
            )
        )
        time.sleep(delay)
        return delay

    def _take_budget(self, params: dict[str, str], attempt: int) -> float:
        """Take a slot of the shared export budget for one request; seconds waited."""
        if self.budget is None:
            return 0.0
        request = f"{params['from_date']}..{params['to_date']} attempt {attempt}"
        try:
            return self.budget.acquire(request).waited_seconds
        except ExportBudgetExhausted as exc:
            raise MixpanelBudgetError(str(exc)) from None

    # ---------------------------------------------------------------- export
    def export_params(
        self,
        from_date: DateLike,
        to_date: DateLike,
        events: Optional[Sequence[str]] = None,
        where: Optional[str] = None,
    ) -> dict[str, str]:
        """Query parameters of ``GET /api/2.0/export`` (no secrets in them)."""
        start, end = day_of(from_date), day_of(to_date)
        if start > end:
            raise ValueError(f"from_date {start} is after to_date {end}")
        params = {"from_date": start.isoformat(), "to_date": end.isoformat()}
        if events:
            params["event"] = orjson.dumps(list(events)).decode()
        if where:
            params["where"] = where
        if self.project_id:
            params["project_id"] = str(self.project_id)
        return params

    def export_to_file(
        self,
        from_date: DateLike,
        to_date: DateLike,
        events: Optional[Sequence[str]] = None,
        where: Optional[str] = None,
        *,
        dest: Union[str, Path],
        progress: Optional[GrowingFile] = None,
    ) -> ExportStats:
        """Stream the raw export into ``dest``: memory stays flat (1 MiB chunks, decompressed
        on the fly) and a retried request starts the ``.part`` file from scratch."""
        self.check_configuration()
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        params = self.export_params(from_date, to_date, events, where)
        url = self.export_endpoint
        part = dest.with_name(dest.name + ".part")
        started = time.monotonic()
        waited = 0.0
        headers = {"Accept-Encoding": "gzip", "Accept": "text/plain"}
        budget_waited = 0.0
        for attempt in itertools.count(1):
            budget_waited += self._take_budget(params, attempt)
            self._count()
            try:
                response = self._http().get(
                    url,
                    params=params,
                    auth=self._auth(),
                    headers=headers,
                    stream=True,
                    timeout=self._timeout(),
                )
            except _STREAM_ERRORS as exc:
                waited += self._wait("export", attempt, f"connection error {type(exc).__name__}", None)
                continue
            with response:
                status = response.status_code
                if status == 200:
                    try:
                        lines, size = _stream_body(response, part, progress)
                    except _STREAM_ERRORS as exc:
                        part.unlink(missing_ok=True)
                        reason = f"stream broken mid-body ({type(exc).__name__})"
                        waited += self._wait("export", attempt, reason, None)
                        continue
                    except ExportTruncated as exc:
                        # Never loaded as complete: retried; when every attempt is cut the
                        # run fails here and the partition keeps its previous rows.
                        part.unlink(missing_ok=True)
                        reason = f"export truncated by Mixpanel: {exc}"
                        waited += self._wait("export", attempt, reason, None)
                        continue
                    os.replace(part, dest)
                    stats = ExportStats(
                        path=dest,
                        lines=lines,
                        bytes=size,
                        requests=attempt,
                        source="http",
                        elapsed_seconds=time.monotonic() - started,
                        waited_seconds=waited,
                        budget_waited_seconds=budget_waited,
                    )
                    _log.info(
                        f"Mixpanel export {params['from_date']}..{params['to_date']}: "
                        f"{lines} lines, {size} bytes, {attempt} request(s)"
                    )
                    return stats
                detail = _body_excerpt(response)
                if status in (401, 403):
                    raise MixpanelAuthError(
                        self._redact(
                            f"Mixpanel export refused the credentials (HTTP {status}): "
                            f"{self._auth_hint()}. Server said: {detail}"
                        )
                    )
                if is_retryable_status(status):
                    waited += self._wait(
                        "export", attempt, f"HTTP {status}", response.headers.get("Retry-After")
                    )
                    continue
                raise MixpanelError(self._redact(f"Mixpanel export failed (HTTP {status}): {detail}"))
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- engage
    def _update_token(self) -> str:
        return self.project_token or TOKEN_PLACEHOLDER

    def _send_updates(self, updates: Sequence[dict]) -> EngageResult:
        """POST the batch; missing or placeholder ``$token`` values get ``project_token``."""
        if not self.project_token:
            raise SettingsError("Mixpanel /engage needs MIXPANEL_PROJECT_TOKEN to be set.")
        body = [
            u if u.get("$token") not in (None, "", TOKEN_PLACEHOLDER) else {**u, "$token": self.project_token}
            for u in updates
        ]
        count = len(body)
        url = self.engage_endpoint
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        data = orjson.dumps(body)

        def failed(status: Optional[int], error: str, attempts: int) -> EngageResult:
            message = self._redact(error)
            _log.warning(f"Mixpanel /engage batch of {count} failed: {message}")
            return EngageResult(False, count, attempts, "http", status, message)

        for attempt in itertools.count(1):
            self._count()
            retry_after = None
            try:
                response = self._http().post(
                    url, params={"verbose": "1"}, data=data, headers=headers, timeout=self._timeout()
                )
            except _STREAM_ERRORS as exc:
                reason, status = f"connection error {type(exc).__name__}", None
            else:
                status = response.status_code
                if status == 200:
                    ok, error = _engage_outcome(response)
                    if ok:
                        return EngageResult(True, count, attempt, "http", 200)
                    return failed(200, f"Mixpanel rejected the batch: {error}", attempt)
                if not is_retryable_status(status):
                    hint = " (check MIXPANEL_PROJECT_TOKEN)" if status in (401, 403) else ""
                    return failed(status, f"HTTP {status}{hint}: {_body_excerpt(response)}", attempt)
                reason, retry_after = f"HTTP {status}", response.headers.get("Retry-After")
            try:
                self._wait("engage", attempt, reason, retry_after)
            except MixpanelError as exc:
                return failed(status, str(exc), attempt)
        raise AssertionError("unreachable")


class SplitMixpanel(MixpanelService):
    """Export from ``exports``, /engage to ``profiles`` (two configured services), e.g. the
    real export with credentials but no project token: profile updates go to the outbox."""

    exports: MixpanelService
    profiles: MixpanelService

    def check_configuration(self) -> None:
        self.exports.check_configuration()
        self.profiles.check_configuration()

    @property
    def export_mode(self) -> str:
        return self.exports.export_mode

    @property
    def engage_mode(self) -> str:
        return self.profiles.engage_mode

    @property
    def requests_made(self) -> int:
        return self.exports.requests_made + self.profiles.requests_made

    def export_to_file(self, from_date, to_date, events=None, where=None, *, dest, progress=None) -> ExportStats:
        return self.exports.export_to_file(from_date, to_date, events, where, dest=dest, progress=progress)

    def _update_token(self) -> str:
        return self.profiles._update_token()

    def engage(self, updates: Sequence[dict]) -> EngageResult:
        return self.profiles.engage(updates)

# Mixpanel ends a 200 export early with this line (or stops mid-line): the body is incomplete.
TERMINATED_EARLY = b"terminated early"


class ExportTruncated(Exception):
    """A 200 export body that Mixpanel ended early: never loaded as complete, retried."""


def _stream_body(response: requests.Response, path: Path, progress: Optional[GrowingFile] = None) -> tuple[int, int]:
    """Write the (decompressed) body to ``path``; return (lines, bytes).  Flat memory.

    Raises :class:`ExportTruncated` when the body is not a complete export: its last line
    is Mixpanel's ``terminated early`` marker, or it stops mid-line (no final newline).
    An empty body is a complete export of a day without events.  ``progress`` hears of
    the file's start, of each flushed chunk and, only when the body is complete, of its
    end (a reader never takes a cut body for a whole one).
    """
    lines = size = 0
    tail = b""
    with open(path, "wb") as out:
        if progress is not None:
            progress.restart(path)
        for chunk in response.iter_content(chunk_size=CHUNK):
            if not chunk:
                continue
            out.write(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
            tail = (tail + chunk[-256:])[-256:]  # not a copy of the whole chunk
            if progress is not None:
                out.flush()
                progress.wrote(len(chunk))
    if size and not tail.endswith(b"\n"):
        raise ExportTruncated(f"the body stops mid-line after {lines} complete lines (no final newline)")
    last_line = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].strip()
    if last_line == TERMINATED_EARLY:
        raise ExportTruncated(f"the body ends with Mixpanel's 'terminated early' line after {lines - 1} lines")
    if progress is not None:
        progress.finish()
    return lines, size


def _body_excerpt(response: requests.Response, limit: int = 300) -> str:
    try:
        text = response.text
    except Exception:  # noqa: BLE001 - the status code is what matters
        return "<unreadable body>"
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _engage_outcome(response: requests.Response) -> tuple[bool, Optional[str]]:
    """Parse /engage's body: ``{"status": 1}`` / ``{"status": 0, "error": ...}`` or ``1`` / ``0``."""
    text = response.text.strip()
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False, f"unexpected response {text[:200]!r}"
    if isinstance(payload, dict):
        if payload.get("status") == 1:
            return True, None
        return False, str(payload.get("error") or f"status={payload.get('status')!r}")
    if payload == 1:
        return True, None
    return False, f"status={payload!r}"
