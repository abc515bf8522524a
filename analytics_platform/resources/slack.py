"""Slack alerts: the interface of the ``slack`` resource and the real Slack client.

:class:`SlackService` is what assets and sensors type against: ``post_message(text,
blocks=None, channel=None) -> SlackDelivery``; text and blocks are redacted before they
leave.  Implementations: :class:`SlackResource` (here) and the local stand-in
:class:`~analytics_platform.resources.local.slack_outbox.LocalSlack` (log + JSON-lines
outbox); ``build_resources`` picks one.

:class:`SlackResource`: ``bot_token`` -> ``slack_sdk.WebClient`` (``chat.postMessage``, any
channel; ``api_url`` overrides the base URL, e.g. a stub); else ``webhook_url`` ->
``slack_sdk.webhook.WebhookClient`` (the webhook's channel is fixed when the webhook is
created in Slack: the ``channel`` argument is only recorded, never honoured).  Neither set
is a set-up error naming both variables.

Both clients get slack_sdk's retry handlers: rate limits (429, sleeps ``Retry-After``),
server errors (500/503) and connection errors, with exponential backoff and jitter.  A
message that still cannot be delivered returns ``SlackDelivery(delivered=False, error=...)``:
delivery problems never raise.  The token and the webhook URL never reach a log line, an
error or the outbox: slack_sdk's own logging goes through a redacting logger.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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

from analytics_platform.settings import SettingsError, redact

_log = get_dagster_logger("slack")


@dataclass(frozen=True)
class SlackDelivery:
    """Outcome of one message: ``destination`` is the channel, ``webhook`` or ``outbox``."""

    delivered: bool
    destination: str
    error: Optional[str] = None
    ts: Optional[str] = None
    # True when retrying cannot help (unknown channel, bot not in it, revoked token, a
    # webhook that no longer exists): the caller gives up after a few attempts.
    permanent: bool = False


# Slack Web API error codes that no retry fixes (https://api.slack.com/methods/chat.postMessage#errors)
PERMANENT_SLACK_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "token_revoked", "token_expired", "account_inactive", "missing_scope", "no_permission",
    "restricted_action", "team_access_not_granted", "invalid_channel", "org_login_required",
    # incoming webhooks (https://api.slack.com/messaging/webhooks#handling_errors)
    "no_service", "no_active_hooks", "action_prohibited", "channel_is_archived", "invalid_token",
    "posting_to_general_channel_denied", "team_disabled", "user_not_found",
})


def is_permanent_slack_error(status: Optional[int], code: Optional[str]) -> bool:
    """A delivery error that no retry fixes: a known permanent code, or a 4xx other than 429."""
    if code and code.strip().lower() in PERMANENT_SLACK_ERRORS:
        return True
    return status is not None and 400 <= status < 500 and status != 429


class _RedactingFilter(logging.Filter):
    def __init__(self, redact) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        return True


class SlackService(ConfigurableResource):
    """The ``slack`` resource's interface: post an alert, never raise for delivery problems."""

    default_channel: str = "#data-alerts"

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.check_configuration()

    def check_configuration(self) -> None:
        """Raise SettingsError naming the variable when the configuration cannot work."""

    @property
    def mode(self) -> str:
        """``bot`` | ``webhook`` | ``outbox``."""
        raise NotImplementedError

    def _secrets(self) -> list[Optional[str]]:
        """This resource's own credentials (redacted with the environment's secrets)."""
        return []

    def _redact(self, text: str) -> str:
        return redact(text, also=self._secrets())

    def _clean(self, text: str, blocks: Optional[list]) -> tuple[str, Optional[list]]:
        """Alerts never carry secrets: redact the text and the blocks before they leave."""
        text = self._redact(text)
        if blocks:
            blocks = json.loads(self._redact(json.dumps(blocks)))
        return text, blocks

    def post_message(
        self, text: str, blocks: Optional[list] = None, channel: Optional[str] = None
    ) -> SlackDelivery:
        """Post ``text`` (fallback/notification text) and optional Block Kit ``blocks``.

        ``channel`` defaults to ``default_channel`` (a webhook posts to its own channel).
        Never raises for delivery problems: see ``SlackDelivery.error``.
        """
        self.check_configuration()
        target = channel or self.default_channel
        text, blocks = self._clean(text, blocks)
        return self._deliver(target, text, blocks)

    def _deliver(self, channel: str, text: str, blocks: Optional[list]) -> SlackDelivery:
        raise NotImplementedError


class SlackResource(SlackService):
    """Posts alerts to Slack with a bot token (any channel) or an incoming webhook."""

    bot_token: Optional[str] = None
    webhook_url: Optional[str] = None
    api_url: Optional[str] = None
    max_retries: int = 3
    backoff_factor: float = 0.5
    timeout_seconds: int = 30

    _client: Any = PrivateAttr(default=None)
    _checked: bool = PrivateAttr(default=False)

    # ------------------------------------------------------------------ set-up
    def check_configuration(self) -> None:
        if self._checked:
            return
        if not (self.bot_token or self.webhook_url):
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
        return "bot" if self.bot_token else "webhook"

    # --------------------------------------------------------------- helpers
    def _secrets(self) -> list[Optional[str]]:
        """The token, the webhook URL and its secret path."""
        secrets = [self.bot_token, self.webhook_url]
        if self.webhook_url and "/services/" in self.webhook_url:
            secrets.append(self.webhook_url.split("/services/", 1)[1])
        return secrets

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
        logger.addFilter(_RedactingFilter(self._redact))
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

    # ------------------------------------------------------------------- post
    def _deliver(self, target: str, text: str, blocks: Optional[list]) -> SlackDelivery:
        mode = self.mode
        try:
            if mode == "bot":
                response = self._get_client().chat_postMessage(channel=target, text=text, blocks=blocks)
                return SlackDelivery(True, target, None, response.get("ts"))
            response = self._get_client().send(text=text, blocks=blocks)
            if response.status_code == 200:
                return SlackDelivery(True, "webhook", None, None)
            status, code = response.status_code, str(response.body or "").strip()[:200]
            error = f"HTTP {status}: {code}"
        except SlackApiError as exc:
            data = exc.response.data if exc.response is not None else None
            code = data.get("error") if isinstance(data, dict) else None
            status = exc.response.status_code if exc.response is not None else None
            error = code if status == 200 and code else f"HTTP {status}" + (f": {code}" if code else "")
        except Exception as exc:  # noqa: BLE001 - connection errors after retries, timeouts ...
            status, code = None, None
            error = f"{type(exc).__name__}: {exc}"
        error = self._redact(error)
        destination = target if mode == "bot" else "webhook"
        permanent = is_permanent_slack_error(status, code)
        _log.warning(f"Slack message to {destination} not delivered{' (permanent)' if permanent else ''}: {error}")
        return SlackDelivery(False, destination, error, None, permanent)
