"""Slack stub: Web API ``POST /api/chat.postMessage`` and an incoming webhook ``/services/...``.

Protocol as Slack answers it: the Web API replies 200 with ``{"ok": false, "error": ...}``
for ``not_authed`` / ``invalid_auth`` / ``channel_not_found`` / ``no_text``, and 429 with
``Retry-After`` plus ``{"ok": false, "error": "ratelimited"}``; a webhook replies ``ok`` or
an error text (``no_service``, ``invalid_payload``, ``no_text``).

Knobs: ``channels`` (names; ``#`` optional), ``fail_next(status, times, retry_after,
endpoint="api"|"webhook")``, ``outage = True`` (every request gets 503), and the records
``messages`` (delivered) and ``requests`` (all).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Iterable, Optional, Union
from urllib.parse import parse_qsl

import orjson

from analytics_platform_tests.stubs.base import Fault, StubHandler, StubServer

WEBHOOK_PATH = "/services/T0STUB/B0STUB/stubwebhooksecret0123"


class _SlackHandler(StubHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        path = self.path_only
        raw = self.read_body()
        if path.startswith("/api/"):
            self.stub._api(self, path[len("/api/"):], raw)
        elif path.startswith("/services/"):
            self.stub._webhook(self, path, raw)
        else:
            self.send_bytes(404, b"not found", "text/plain")


class SlackStub(StubServer):
    """A local Slack (Web API + one incoming webhook)."""

    handler_class = _SlackHandler

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-stub-tok",
        channels: Iterable[str] = ("#data-alerts", "#alerts-errors", "#alerts"),
        webhook_path: str = WEBHOOK_PATH,
        webhook_channel: str = "#data-alerts",
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.channels = {c.lstrip("#"): f"C{i:08d}" for i, c in enumerate(channels, 1)}
        self.webhook_path = webhook_path
        self.webhook_channel = webhook_channel
        self.outage = False
        self.messages: list[dict[str, Any]] = []
        self._ts = itertools.count(1)

    # ------------------------------------------------------------------ config
    @property
    def api_url(self) -> str:
        """Base URL for slack_sdk (ends with ``/api/``)."""
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.webhook_path}"

    def env(self, mode: str = "bot") -> dict[str, str]:
        """Settings for this stub: ``mode`` = bot | webhook."""
        if mode == "webhook":
            return {"SLACK_WEBHOOK_URL": self.webhook_url}
        return {"SLACK_BOT_TOKEN": self.bot_token, "SLACK_API_URL": self.api_url}

    def resource_kwargs(self, mode: str = "bot") -> dict[str, Any]:
        """Keyword arguments for ``SlackResource`` pointing here (fast retries)."""
        kwargs: dict[str, Any] = {"max_retries": 3, "backoff_factor": 0.05, "timeout_seconds": 10}
        if mode == "webhook":
            kwargs["webhook_url"] = self.webhook_url
        else:
            kwargs.update(bot_token=self.bot_token, api_url=self.api_url)
        return kwargs

    def add_channel(self, name: str) -> None:
        with self.lock:
            self.channels.setdefault(name.lstrip("#"), f"C{len(self.channels) + 1:08d}")

    def fail_next(
        self,
        status: int = 429,
        times: int = 1,
        retry_after: Optional[Union[int, str]] = 1,
        endpoint: str = "api",
    ) -> None:
        """The next ``times`` requests to ``endpoint`` (api | webhook) answer ``status``."""
        ra = None if retry_after is None or status != 429 else str(retry_after)
        self.faults.push(endpoint, Fault(status=status, retry_after=ra), times)

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        name = channel.lstrip("#")
        with self.lock:
            return [m for m in self.messages if m["channel"].lstrip("#") == name]

    # ---------------------------------------------------------------- helpers
    def _fault_or_outage(self, h: StubHandler, endpoint: str, entry: dict) -> bool:
        if self.outage:
            entry["status"] = 503
            h.send_bytes(503, b"Service Unavailable", "text/plain")
            return True
        fault = self.faults.pop(endpoint)
        if fault is None:
            return False
        entry["status"] = fault.status
        if fault.status == 429:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if endpoint == "api":
                h.send_json(429, {"ok": False, "error": "ratelimited"}, headers)
            else:
                h.send_bytes(429, b"rate_limited", "text/plain", headers)
        else:
            h.send_bytes(fault.status, b"stub fault", "text/plain")
        return True

    def _deliver(self, via: str, channel: str, payload: dict) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message = {
            "via": via,
            "channel": channel,
            "text": payload.get("text"),
            "blocks": payload.get("blocks"),
            "ts": ts,
        }
        with self.lock:
            self.messages.append(message)
        return message

    # -------------------------------------------------------------- endpoints
    def _api(self, h: StubHandler, method: str, raw: bytes) -> None:
        content_type = h.headers.get("Content-Type") or ""
        if "application/json" in content_type:
            args = orjson.loads(raw) if raw else {}
        else:
            args = dict(parse_qsl(raw.decode(), keep_blank_values=True))
            if isinstance(args.get("blocks"), str):
                args["blocks"] = json.loads(args["blocks"])
        auth = h.headers.get("Authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else args.get("token")
        entry = self.record(endpoint="api", method=method, channel=args.get("channel"), status=200, error=None)
        if self._fault_or_outage(h, "api", entry):
            return

        def fail(error: str) -> None:
            entry["error"] = error
            h.send_json(200, {"ok": False, "error": error})

        if method != "chat.postMessage":
            return fail("unknown_method")
        if not token:
            return fail("not_authed")
        if token != self.bot_token:
            return fail("invalid_auth")
        channel = str(args.get("channel") or "")
        name = channel.lstrip("#")
        ids = {cid: cname for cname, cid in self.channels.items()}
        if name not in self.channels and channel not in ids:
            return fail("channel_not_found")
        if not args.get("text") and not args.get("blocks"):
            return fail("no_text")
        cname = ids.get(channel, name)
        message = self._deliver("bot", f"#{cname}", args)
        h.send_json(
            200,
            {
                "ok": True,
                "channel": self.channels[cname],
                "ts": message["ts"],
                "message": {"type": "message", "text": message["text"], "ts": message["ts"]},
            },
        )

    def _webhook(self, h: StubHandler, path: str, raw: bytes) -> None:
        entry = self.record(endpoint="webhook", status=200, error=None)
        if self._fault_or_outage(h, "webhook", entry):
            return

        def fail(status: int, error: str) -> None:
            entry["status"], entry["error"] = status, error
            h.send_bytes(status, error.encode(), "text/plain")

        if path != self.webhook_path:
            return fail(404, "no_service")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return fail(400, "invalid_payload")
        if not isinstance(payload, dict):
            return fail(400, "invalid_payload")
        if not payload.get("text") and not payload.get("blocks"):
            return fail(400, "no_text")
        self._deliver("webhook", self.webhook_channel, payload)
        h.send_bytes(200, b"ok", "text/html")
