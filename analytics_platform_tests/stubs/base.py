"""A threaded HTTP/1.1 server on 127.0.0.1:<ephemeral> to build protocol stubs on.

Subclasses set ``handler_class`` (a :class:`StubHandler`) and keep their state on the stub;
handlers reach it as ``self.stub``.  Use as a context manager (or ``start()``/``stop()``).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Optional
from urllib.parse import parse_qsl, urlsplit

import orjson


@dataclass
class Fault:
    """A scripted answer consumed by the next matching request."""

    status: Optional[int] = None  # HTTP error status to answer with
    retry_after: Optional[str] = None  # Retry-After header value
    body: Optional[bytes] = None
    reset_after_lines: Optional[int] = None  # Mixpanel export: drop the connection after K lines
    reject_error: Optional[str] = None  # Mixpanel /engage: 200 {"status": 0, "error": ...}
    truncate_after_lines: Optional[int] = None  # Mixpanel export: a 200 body that ends early
    truncate_mode: str = "marker"  # "marker": a `terminated early` line; "midline": cut mid-line


class FaultQueue:
    """Thread-safe FIFO of faults per endpoint name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {}

    def push(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._queues.setdefault(endpoint, deque()).extend(fault for _ in range(times))

    def pop(self, endpoint: str) -> Optional[Fault]:
        with self._lock:
            queue = self._queues.get(endpoint)
            return queue.popleft() if queue else None

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()


class ConnectionDropped(Exception):
    """Raised by a handler after it dropped the connection on purpose."""


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, like the real APIs
    server_version = "AnalyticsStub/1"

    @property
    def stub(self) -> Any:
        return self.server.stub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionDropped, ConnectionError, BrokenPipeError, ValueError, OSError):
            pass

    # ---------------------------------------------------------------- request
    @property
    def path_only(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # --------------------------------------------------------------- response
    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None) -> None:
        self.send_bytes(status, orjson.dumps(payload), "application/json", headers)

    def send_chunked(
        self,
        blocks: Iterable[bytes],
        content_type: str,
        gzip: bool = False,
        abort_after_lines: Optional[int] = None,
    ) -> int:
        """Stream ``blocks`` with chunked transfer encoding (optionally gzip); return lines sent.

        With ``abort_after_lines`` the connection is reset (TCP RST) once that many lines
        went out, without the terminating chunk, as a dropped connection looks to a client.
        """
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None
        sent = 0
        for block in blocks:
            if abort_after_lines is not None and sent + block.count(b"\n") >= abort_after_lines:
                keep = abort_after_lines - sent
                cut = 0
                for _ in range(keep):
                    cut = block.index(b"\n", cut) + 1
                block = block[:cut]
                self._write_chunk(block, compressor, flush=True)
                sent += keep
                self.abort_connection()
            self._write_chunk(block, compressor, flush=False)
            sent += block.count(b"\n")
        if compressor is not None:
            tail = compressor.flush()
            if tail:
                self._raw_chunk(tail)
        self.wfile.write(b"0\r\n\r\n")
        return sent

    def _write_chunk(self, data: bytes, compressor: Any, flush: bool) -> None:
        if compressor is not None:
            data = compressor.compress(data)
            if flush:
                data += compressor.flush(zlib.Z_SYNC_FLUSH)
        if data:
            self._raw_chunk(data)

    def _raw_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n" % len(data))
        self.wfile.write(data)
        self.wfile.write(b"\r\n")

    def abort_connection(self) -> None:
        """Reset the TCP connection (RST) and stop handling this request."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        finally:
            self.close_connection = True
            raise ConnectionDropped()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128


class StubServer:
    """Base of the stubs: lifecycle, URL, request log."""

    handler_class: type[StubHandler] = StubHandler

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), self.handler_class)
        self._server.stub = self  # type: ignore[attr-defined]
        self._thread: Optional[threading.Thread] = None
        self.lock = threading.Lock()
        self.faults = FaultQueue()
        self.requests: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, **entry: Any) -> dict[str, Any]:
        entry.setdefault("time", time.time())
        with self.lock:
            self.requests.append(entry)
        return entry

    def start(self) -> "StubServer":
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
