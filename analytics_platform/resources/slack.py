"""Slack alerts: bot token (``chat.postMessage``, any channel), incoming webhook, or outbox.

Choice, in this order: ``bot_token`` -> ``slack_sdk.WebClient`` (``api_url`` overrides the
base URL, e.g. a stub); ``webhook_url`` -> ``slack_sdk.webhook.WebhookClient`` (the webhook's
channel is fixed when the webhook is created in Slack: the ``channel`` argument is only
recorded, never honoured); neither -> the message is logged and appended as one JSON line
to ``outbox_path`` (``require_configured=True``, i.e. prod, makes that a set-up error).

Both clients get slack_sdk's retry handlers: rate limits (429, sleeps ``Retry-After``),
server errors (500/503) and connection errors, with exponential backoff and jitter.  A
message that still cannot be delivered returns ``SlackDelivery(delivered=False, error=...)``:
delivery problems never raise.  The token and the webhook URL never reach a log line, an
error or the outbox: slack_sdk's own logging goes through a redacting logger.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import PrivateAttr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from analytics_platform.settings import SettingsError, redact as redact_settings

_log = get_dagster_logger("slack")


@dataclass(frozen=True)
class SlackDelivery:
    """Outcome of one message: ``destination`` is the channel, ``webhook`` or ``outbox``."""

    delivered: bool
    destination: str
    error: Optional[str] = None
    ts: Optional[str] = None


class _RedactingFilter(logging.Filter):
    def __init__(self, redact) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        return True


class SlackResource(ConfigurableResource):
    """Posts alerts to Slack (bot token or webhook), or to a local JSONL outbox."""

    bot_token: Optional[str] = None
    webhook_url: Optional[str] = None
    api_url: Optional[str] = None
    default_channel: str = "#data-alerts"
    outbox_path: str = ".analytics_data/outbox/slack_alerts.jsonl"
    require_configured: bool = False
    max_retries: int = 3
    backoff_factor: float = 0.5
    timeout_seconds: int = 30

    _client: Any = PrivateAttr(default=None)
    _checked: bool = PrivateAttr(default=False)

    # ------------------------------------------------------------------ set-up
    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.check_configuration()

    def check_configuration(self) -> None:
        """Raise SettingsError naming the variable when the configuration cannot work."""
        if self._checked:
            return
        if self.require_configured and not (self.bot_token or self.webhook_url):
            raise SettingsError(
                "Slack is not configured: set SLACK_BOT_TOKEN (per-channel alerts) or "
                "SLACK_WEBHOOK_URL (ANALYTICS_ENV=prod never writes alerts to the outbox)."
            )
        if self.api_url and not self.api_url.endswith("/api/"):
            raise SettingsError(
                f"SLACK_API_URL must end with '/api/' (e.g. https://slack.com/api/), got {self.api_url!r}"
            )
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise SettingsError("SLACK_WEBHOOK_URL must be an http(s) URL")
        self._checked = True

    @property
    def mode(self) -> str:
        """``bot`` | ``webhook`` | ``outbox``."""
        if self.bot_token:
            return "bot"
        if self.webhook_url:
            return "webhook"
        return "outbox"

    # --------------------------------------------------------------- helpers
    def redact(self, text: str) -> str:
        """Remove the token, the webhook URL (and its secret path) and env secrets."""
        secrets = [self.bot_token, self.webhook_url]
        if self.webhook_url and "/services/" in self.webhook_url:
            secrets.append(self.webhook_url.split("/services/", 1)[1])
        for value in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
            text = text.replace(value, "***")
        try:
            return redact_settings(text)
        except SettingsError:
            return text

    def _retry_handlers(self) -> list[RetryHandler]:
        backoff = BackoffRetryIntervalCalculator(backoff_factor=self.backoff_factor)
        return [
            RateLimitErrorRetryHandler(max_retry_count=self.max_retries),
            ServerErrorRetryHandler(max_retry_count=self.max_retries, interval_calculator=backoff),
            ConnectionErrorRetryHandler(max_retry_count=self.max_retries, interval_calculator=backoff),
        ]

    def _sdk_logger(self) -> logging.Logger:
        """A private logger for slack_sdk whose records are redacted before any handler sees them."""
        logger = logging.Logger("analytics_platform.slack_sdk", logging.INFO)  # unregistered: no leak
        logger.parent = logging.getLogger("analytics_platform.slack_sdk")
        logger.addFilter(_RedactingFilter(self.redact))
        return logger

    def _get_client(self) -> Any:
        if self._client is None:
            if self.bot_token:
                self._client = WebClient(
                    token=self.bot_token,
                    base_url=self.api_url or WebClient.BASE_URL,
                    timeout=self.timeout_seconds,
                    logger=self._sdk_logger(),
                    retry_handlers=self._retry_handlers(),
                )
            else:
                self._client = WebhookClient(
                    url=self.webhook_url,
                    timeout=self.timeout_seconds,
                    logger=self._sdk_logger(),
                    retry_handlers=self._retry_handlers(),
                )
        return self._client

    def _clean(self, text: str, blocks: Optional[list]) -> tuple[str, Optional[list]]:
        """Alerts never carry secrets: redact the text and the blocks before they leave."""
        text = self.redact(text)
        if blocks:
            blocks = json.loads(self.redact(json.dumps(blocks)))
        return text, blocks

    # ------------------------------------------------------------------- post
    def post_message(
        self, text: str, blocks: Optional[list] = None, channel: Optional[str] = None
    ) -> SlackDelivery:
        """Post ``text`` (fallback/notification text) and optional Block Kit ``blocks``.

        ``channel`` defaults to ``default_channel`` (bot token only; a webhook posts to its
        own channel).  Never raises for delivery problems: see ``SlackDelivery.error``.
        """
        self.check_configuration()
        target = channel or self.default_channel
        text, blocks = self._clean(text, blocks)
        mode = self.mode
        if mode == "outbox":
            return self._to_outbox(target, text, blocks)
        try:
            if mode == "bot":
                response = self._get_client().chat_postMessage(channel=target, text=text, blocks=blocks)
                return SlackDelivery(True, target, None, response.get("ts"))
            response = self._get_client().send(text=text, blocks=blocks)
            if response.status_code == 200:
                return SlackDelivery(True, "webhook", None, None)
            error = f"HTTP {response.status_code}: {str(response.body)[:200]}"
        except SlackApiError as exc:
            data = exc.response.data if exc.response is not None else None
            code = data.get("error") if isinstance(data, dict) else None
            status = exc.response.status_code if exc.response is not None else None
            error = code if status == 200 and code else f"HTTP {status}" + (f": {code}" if code else "")
        except Exception as exc:  # noqa: BLE001 - connection errors after retries, timeouts ...
            error = f"{type(exc).__name__}: {exc}"
        error = self.redact(error)
        destination = target if mode == "bot" else "webhook"
        _log.warning(f"Slack message to {destination} not delivered: {error}")
        return SlackDelivery(False, destination, error, None)

    def _to_outbox(self, channel: str, text: str, blocks: Optional[list]) -> SlackDelivery:
        path = Path(self.outbox_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {
                "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "channel": channel,
                "text": text,
                "blocks": blocks,
            },
            ensure_ascii=False,
        )
        with open(path, "a", encoding="utf-8") as handle:  # one write per message
            handle.write(line + "\n")
        first_line = text.splitlines()[0] if text else ""
        _log.info(f"Slack not configured; alert for {channel} written to {path}: {first_line}")
        return SlackDelivery(True, "outbox", None, None)
