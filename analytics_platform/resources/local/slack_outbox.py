"""Local stand-in of Slack: each alert is logged and appended as one JSON line
(``{"at", "channel", "text", "blocks"}``, redacted like a real message) to ``outbox_path``
(``$ANALYTICS_DATA_DIR/outbox/slack_alerts.jsonl`` when chosen by ``build_resources``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from dagster import get_dagster_logger

from analytics_platform.common import utc_now
from analytics_platform.resources.slack import SlackDelivery, SlackService

_log = get_dagster_logger("slack")


class LocalSlack(SlackService):
    """Alerts to a local JSON-lines outbox (Slack not configured, ``ANALYTICS_ENV=local``)."""

    outbox_path: str = ".analytics_data/outbox/slack_alerts.jsonl"

    @property
    def mode(self) -> str:
        return "outbox"

    def _deliver(self, channel: str, text: str, blocks: Optional[list]) -> SlackDelivery:
        path = Path(self.outbox_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"at": utc_now().isoformat(), "channel": channel, "text": text, "blocks": blocks},
            ensure_ascii=False,
        )
        with open(path, "a", encoding="utf-8") as handle:  # one write per message
            handle.write(line + "\n")
        first_line = text.splitlines()[0] if text else ""
        _log.info(f"Slack not configured; alert for {channel} written to {path}: {first_line}")
        return SlackDelivery(True, "outbox", None, None)
