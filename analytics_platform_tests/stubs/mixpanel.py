"""Mixpanel stub: Raw Event Export (``GET /api/2.0/export``) and ``POST /engage``.

Protocol as documented by Mixpanel: Basic auth (service account ``user:secret`` with
``project_id``, or the legacy API secret as username and an empty password), inclusive
``from_date``/``to_date``, ``event`` as a JSON array, JSON-lines body streamed with chunked
transfer encoding and gzip when asked; /engage takes a JSON array (or form ``data=``) of
updates carrying ``$token`` and answers 200 with ``{"status": 1}`` or
``{"status": 0, "error": ...}`` (``verbose=1``) / ``1`` or ``0``.

Data per UTC day (served in the order added): ``add_events`` (dicts), ``add_raw_lines``
(malformed or hand-written lines), ``add_generated`` (N synthetic events produced lazily:
1M+ lines cost no memory) and ``add_file`` (a JSON-lines file served as is).

Faults are scripted FIFO per endpoint: ``fail_export`` / ``fail_engage`` (status, times,
``Retry-After``), ``reset_export_after`` (connection reset after K lines),
``reject_engage`` (``{"status": 0, "error": ...}``).  Every request is recorded.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import orjson

from analytics_platform_tests.stubs.base import ConnectionDropped, Fault, StubHandler, StubServer

EXPORT_PATH = "/api/2.0/export"
ENGAGE_PATH = "/engage"
MAX_ENGAGE_BATCH = 2000
BLOCK_LINES = 2000  # lines per generated block
FILE_BLOCK = 256 * 1024


def generate_lines(
    day: Union[str, dt.date],
    count: int,
    event: str = "benchmark_event",
    *,
    ms: bool = False,
    users: int = 10_000,
    start: int = 0,
) -> Iterator[bytes]:
    """Blocks of ``count`` deterministic synthetic export lines for ``day`` (lazy)."""
    day = dt.date.fromisoformat(str(day))
    base = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())
    step = 86_400 / max(count, 1)
    ev = json.dumps(event)
    tag = f"{day.isoformat()}-{event}"
    for first in range(start, start + count, BLOCK_LINES):
        last = min(first + BLOCK_LINES, start + count)
        rows = []
        for i in range(first, last):
            seconds = base + int((i - start) * step)
            stamp = seconds * 1000 + i % 1000 if ms else seconds
            rows.append(
                f'{{"event":{ev},"properties":{{"time":{stamp},"distinct_id":"user-{i % users}",'
                f'"$insert_id":"{tag}-{i}","mp_processing_time_ms":{seconds * 1000 + 1500},'
                f'"$device_id":"device-{i % users}","mp_os":"Android","seq":{i}}}}}\n'
            )
        yield "".join(rows).encode()


def write_export_file(path: Union[str, Path], day: Union[str, dt.date], count: int, **kwargs: Any) -> Path:
    """Write ``generate_lines(day, count, ...)`` to ``path`` (for benchmarks and local files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for block in generate_lines(day, count, **kwargs):
            out.write(block)
    return path


@dataclass
class _Source:
    kind: str  # "lines" | "generated" | "file"
    lines: Optional[list[tuple[Optional[str], bytes]]] = None  # (event name or None, line)
    count: int = 0
    event: Optional[str] = None
    ms: bool = False
    path: Optional[Path] = None
    events: Optional[frozenset] = None  # events a file holds (None = unknown: always served)

    def blocks(self, day: str, wanted: Optional[frozenset]) -> Iterator[bytes]:
        if self.kind == "generated":
            if wanted is None or self.event in wanted:
                yield from generate_lines(day, self.count, self.event, ms=self.ms)
        elif self.kind == "file":
            if wanted is None or self.events is None or self.events & wanted:
                with open(self.path, "rb") as handle:
                    while block := handle.read(FILE_BLOCK):
                        yield block
        else:
            kept = [line for name, line in self.lines if wanted is None or name is None or name in wanted]
            for i in range(0, len(kept), BLOCK_LINES):
                yield b"".join(kept[i : i + BLOCK_LINES])


def _local_slice(source: _Source, zone: ZoneInfo, start: dt.date, end: dt.date) -> _Source:
    """The lines of ``source`` whose event time falls on a date of ``zone`` in [start, end]
    (hand-added lines only; a line without a readable time is kept)."""
    if source.kind != "lines":
        return source

    def keep(line: bytes) -> bool:
        try:
            seconds = float(json.loads(line)["properties"]["time"])
        except (ValueError, KeyError, TypeError):
            return True
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        local = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).astimezone(zone).date()
        return start <= local <= end

    return _Source(kind="lines", lines=[(name, line) for name, line in source.lines if keep(line)])


def _truncated(blocks: Iterator[bytes], after_lines: int, mode: str) -> Iterator[bytes]:
    """``blocks`` cut after ``after_lines`` lines, ended as Mixpanel ends a cut export."""
    sent = 0
    rest = b""
    for block in blocks:
        count = block.count(b"\n")
        if sent + count < after_lines:
            sent += count
            yield block
            continue
        cut = 0
        for _ in range(after_lines - sent):
            cut = block.index(b"\n", cut) + 1
        yield block[:cut]
        rest = block[cut:]
        break
    if mode == "marker":
        yield b"terminated early\n"
    else:
        following = rest.split(b"\n", 1)[0] or b'{"event":"app_open","properties":{"time":17'
        yield following[: max(1, len(following) // 2)]


def _line(raw: Union[str, bytes]) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    return data if data.endswith(b"\n") else data + b"\n"


class _MixpanelHandler(StubHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path_only.rstrip("/") == EXPORT_PATH:
            self.stub._export(self)
        else:
            self.send_json(404, {"error": f"unknown path {self.path_only}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path_only.rstrip("/") == ENGAGE_PATH:
            self.stub._engage(self)
        else:
            self.send_json(404, {"error": f"unknown path {self.path_only}"})


class MixpanelStub(StubServer):
    """A local Mixpanel (export + engage).  ``env()`` gives the matching settings."""

    handler_class = _MixpanelHandler

    def __init__(
        self,
        *,
        service_account: tuple[str, str] = ("stub-sa.mp-service-account", "stub-sa-secret-8c1f"),
        project_id: str = "424242",
        api_secret: str = "stub-legacy-api-secret-51d2",
        project_token: str = "stub-project-token-77ab",
        require_auth: bool = True,
        gzip: bool = True,
    ) -> None:
        super().__init__()
        self.service_account = service_account
        self.project_id = project_id
        self.api_secret = api_secret
        self.project_token = project_token
        self.require_auth = require_auth
        self.gzip = gzip
        self.days: dict[str, list[_Source]] = {}
        # A project created before 2023: from_date/to_date are dates of this zone, and a
        # to_date after the project's local today answers 400 (as Mixpanel does).
        self.project_timezone = "UTC"
        self.now: Optional[dt.datetime] = None  # the stub's clock (None: the real one)
        self.engage_batches: list[list[dict]] = []  # accepted batches
        self.profiles: dict[str, dict] = {}  # distinct_id -> properties after $set/$unset

    # ------------------------------------------------------------------ config
    @property
    def export_url(self) -> str:
        return self.url

    @property
    def api_url(self) -> str:
        return self.url

    def env(self, auth: str = "service_account") -> dict[str, str]:
        """Settings for this stub: ``auth`` = service_account | legacy | none."""
        env = {
            "MIXPANEL_EXPORT_URL": self.export_url,
            "MIXPANEL_API_URL": self.api_url,
            "MIXPANEL_PROJECT_TOKEN": self.project_token,
        }
        if auth == "service_account":
            env.update(
                MIXPANEL_PROJECT_ID=self.project_id,
                MIXPANEL_SERVICE_ACCOUNT_USERNAME=self.service_account[0],
                MIXPANEL_SERVICE_ACCOUNT_SECRET=self.service_account[1],
            )
        elif auth == "legacy":
            env["MIXPANEL_API_SECRET"] = self.api_secret
        return env

    def resource_kwargs(self, auth: str = "service_account") -> dict[str, Any]:
        """Keyword arguments for ``MixpanelResource`` pointing here (fast retries)."""
        kwargs: dict[str, Any] = {
            "export_url": self.export_url,
            "api_url": self.api_url,
            "project_token": self.project_token,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.5,
            "max_attempts": 5,
            "timeout_seconds": 30,
        }
        if auth == "service_account":
            kwargs.update(
                project_id=self.project_id,
                service_account_username=self.service_account[0],
                service_account_secret=self.service_account[1],
            )
        elif auth == "legacy":
            kwargs["api_secret"] = self.api_secret
        return kwargs

    # -------------------------------------------------------------------- data
    def _add(self, day: Union[str, dt.date], source: _Source) -> None:
        key = dt.date.fromisoformat(str(day)).isoformat()
        with self.lock:
            self.days.setdefault(key, []).append(source)

    def add_events(self, day: Union[str, dt.date], events: Iterable[dict]) -> None:
        """Serve these event dicts (``{"event", "properties"}``) on ``day``."""
        lines = [(e.get("event"), orjson.dumps(e) + b"\n") for e in events]
        self._add(day, _Source("lines", lines=lines))

    def add_raw_lines(self, day: Union[str, dt.date], lines: Iterable[Union[str, bytes]]) -> None:
        """Serve raw lines as given (malformed JSON is always served, whatever the filter)."""
        parsed = []
        for raw in lines:
            line = _line(raw)
            try:
                record = orjson.loads(line)
                name = record.get("event") if isinstance(record, dict) else None
            except orjson.JSONDecodeError:
                name = None
            parsed.append((name if isinstance(name, str) else None, line))
        self._add(day, _Source("lines", lines=parsed))

    def add_generated(self, day: Union[str, dt.date], count: int, event: str = "benchmark_event", *, ms: bool = False) -> None:
        """Serve ``count`` synthetic ``event`` lines on ``day``, generated lazily per request."""
        self._add(day, _Source("generated", count=count, event=event, ms=ms))

    def add_file(self, day: Union[str, dt.date], path: Union[str, Path], events: Optional[Iterable[str]] = None) -> None:
        """Serve a JSON-lines file as is on ``day`` (skipped when ``events`` misses the filter)."""
        self._add(day, _Source("file", path=Path(path), events=frozenset(events) if events else None))

    def clear_data(self) -> None:
        with self.lock:
            self.days.clear()

    # ------------------------------------------------------------------ faults
    def fail_export(self, status: int, times: int = 1, retry_after: Optional[Union[int, str]] = None, body: Optional[bytes] = None) -> None:
        """The next ``times`` export requests answer ``status`` (e.g. 429 with Retry-After, 500, 401)."""
        self.faults.push("export", Fault(status, _ra(retry_after), body), times)

    def reset_export_after(self, lines: int, times: int = 1) -> None:
        """The next ``times`` export responses drop the connection after ``lines`` lines."""
        self.faults.push("export", Fault(reset_after_lines=lines), times)

    def truncate_export(self, after_lines: int, mode: str = "marker", times: int = 1) -> None:
        """The next ``times`` export responses are 200 bodies that Mixpanel ended early: the
        first ``after_lines`` lines, then ``terminated early`` (``mode="marker"``) or half of
        the next line without a newline (``mode="midline"``); the response itself ends cleanly."""
        if mode not in ("marker", "midline"):
            raise ValueError("mode must be 'marker' or 'midline'")
        self.faults.push("export", Fault(truncate_after_lines=after_lines, truncate_mode=mode), times)

    def fail_engage(self, status: int, times: int = 1, retry_after: Optional[Union[int, str]] = None, body: Optional[bytes] = None) -> None:
        self.faults.push("engage", Fault(status, _ra(retry_after), body), times)

    def reject_engage(self, error: str = "some data points in the request failed validation", times: int = 1) -> None:
        """The next ``times`` /engage batches answer 200 ``{"status": 0, "error": error}``."""
        self.faults.push("engage", Fault(reject_error=error), times)

    # ----------------------------------------------------------------- records
    @property
    def export_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["endpoint"] == "export"]

    @property
    def engage_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["endpoint"] == "engage"]

    # ----------------------------------------------------------------- export
    def _check_auth(self, handler: StubHandler, params: dict[str, str]) -> tuple[str, Optional[str]]:
        """(kind, error) where kind is service_account | legacy | anonymous | invalid."""
        header = handler.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            if self.require_auth:
                return "anonymous", "Authorization required"
            return "anonymous", None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "invalid", "malformed Authorization header"
        if (user, password) == self.service_account:
            if params.get("project_id") != self.project_id:
                return "service_account", f"project_id {params.get('project_id')!r} is not accessible"
            return "service_account", None
        if user == self.api_secret and password == "":
            return "legacy", None
        # like some real APIs, echo the user name: the client must redact what it relays
        return "invalid", f"Invalid credentials for {user!r}"

    def _export(self, h: StubHandler) -> None:
        params = h.query
        accept_gzip = "gzip" in (h.headers.get("Accept-Encoding") or "")
        auth, auth_error = self._check_auth(h, params)
        entry = self.record(
            endpoint="export",
            params=params,
            auth=auth,
            auth_ok=auth_error is None,
            accept_gzip=accept_gzip,
            status=None,
            lines_sent=0,
        )
        fault = self.faults.pop("export")
        if fault is not None and fault.status is not None:
            entry["status"] = fault.status
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            body = fault.body or orjson.dumps({"error": f"stub fault {fault.status}"})
            h.send_bytes(fault.status, body, "application/json", headers)
            return
        if auth_error is not None:
            entry["status"] = 401
            h.send_json(401, {"error": auth_error})
            return
        try:
            start = dt.date.fromisoformat(params["from_date"])
            end = dt.date.fromisoformat(params["to_date"])
            if start > end:
                raise ValueError("from_date is after to_date")
            wanted = None
            if params.get("event"):
                names = json.loads(params["event"])
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError("event must be a JSON array of strings")
                wanted = frozenset(names)
        except (KeyError, ValueError) as exc:
            entry["status"] = 400
            h.send_json(400, {"request": h.path, "error": f"invalid request: {exc}"})
            return
        zone = ZoneInfo(self.project_timezone)
        local_today = (self.now or dt.datetime.now(dt.timezone.utc)).astimezone(zone).date()
        if end > local_today:
            entry["status"] = 400
            h.send_json(400, {"request": h.path, "error": f"'to_date' cannot be later than today ({local_today})"})
            return
        entry["status"] = 200
        days = []
        with self.lock:
            if self.project_timezone == "UTC":
                day = start
                while day <= end:
                    days.append((day.isoformat(), list(self.days.get(day.isoformat(), []))))
                    day += dt.timedelta(days=1)
            else:  # local dates: the UTC days around them, each line kept by its local date
                day = start - dt.timedelta(days=1)
                while day <= end + dt.timedelta(days=1):
                    days.append((day.isoformat(), [
                        _local_slice(source, zone, start, end) for source in self.days.get(day.isoformat(), [])
                    ]))
                    day += dt.timedelta(days=1)

        def blocks() -> Iterator[bytes]:
            for key, sources in days:
                for source in sources:
                    yield from source.blocks(key, wanted)

        body = blocks()
        if fault is not None and fault.truncate_after_lines is not None:
            entry["truncated"] = fault.truncate_mode
            body = _truncated(body, fault.truncate_after_lines, fault.truncate_mode)

        abort = fault.reset_after_lines if fault is not None else None
        try:
            entry["lines_sent"] = h.send_chunked(
                body, "text/plain; charset=utf-8", gzip=self.gzip and accept_gzip, abort_after_lines=abort
            )
        except ConnectionDropped:
            entry["lines_sent"], entry["reset"] = abort, True
            raise

    # ----------------------------------------------------------------- engage
    def _engage(self, h: StubHandler) -> None:
        verbose = h.query.get("verbose") == "1"
        raw = h.read_body()
        content_type = h.headers.get("Content-Type") or ""
        entry = self.record(endpoint="engage", content_type=content_type, status=None, updates=None, outcome=None)

        def answer(ok: bool, error: Optional[str] = None) -> None:
            entry["status"], entry["outcome"] = 200, ("ok" if ok else error)
            if verbose:
                h.send_json(200, {"status": 1 if ok else 0, "error": error})
            else:
                h.send_bytes(200, b"1" if ok else b"0", "text/plain")

        try:
            updates = _parse_engage_body(raw, content_type)
        except ValueError as exc:
            entry["body"] = raw[:2000]
            return answer(False, f"invalid body: {exc}")
        entry["updates"] = updates
        fault = self.faults.pop("engage")
        if fault is not None and fault.status is not None:
            entry["status"] = fault.status
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            h.send_bytes(fault.status, fault.body or b'{"error": "stub fault"}', "application/json", headers)
            return
        if fault is not None and fault.reject_error is not None:
            return answer(False, fault.reject_error)
        if len(updates) > MAX_ENGAGE_BATCH:
            return answer(False, f"too many updates in one request: {len(updates)} > {MAX_ENGAGE_BATCH}")
        for update in updates:
            if not isinstance(update, dict) or not update.get("$distinct_id"):
                return answer(False, "$distinct_id, missing or empty")
            if update.get("$token") != self.project_token:
                return answer(False, "$token, invalid or missing")
        with self.lock:
            self.engage_batches.append(updates)
            for update in updates:
                profile = self.profiles.setdefault(str(update["$distinct_id"]), {})
                profile.update(update.get("$set") or {})
                for name in update.get("$unset") or []:
                    profile.pop(name, None)
        answer(True)


def _parse_engage_body(raw: bytes, content_type: str) -> list:
    """JSON array/object body, or form-encoded ``data=`` (JSON or base64 JSON)."""
    if "application/x-www-form-urlencoded" in content_type:
        values = parse_qs(raw.decode()).get("data")
        if not values:
            raise ValueError("missing data parameter")
        text = values[0]
        try:
            payload = json.loads(text)
        except ValueError:
            payload = json.loads(base64.b64decode(text))
    else:
        payload = orjson.loads(raw) if raw else None
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list):
        raise ValueError("expected a JSON array of updates")
    return payload


def _ra(value: Optional[Union[int, str]]) -> Optional[str]:
    return None if value is None else str(value)
