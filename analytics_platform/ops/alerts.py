"""Run-failure alert text (pure functions, no Dagster): error summary, scrubbing, message."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

MAX_ERROR_LINES = 3
MAX_ERROR_CHARS = 500
MAX_LISTED = 5

# Credentials that look like credentials, whatever variable they came from.
_PATTERNS = [
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@"), r"\1***@"),  # URL passwords
    (re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]{6,}"), "xox*-***"),  # Slack tokens
    (re.compile(r"(?i)(hooks\.slack\.com/services/)\S+"), r"\1***"),
    (re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)[^\s,;&'\"]+"), r"\1\2***"),
]


def scrub(text: str) -> str:
    """Mask credential-shaped substrings (URL passwords, bearer tokens, key=value secrets)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def summarize_error(message: str, max_lines: int = MAX_ERROR_LINES, max_chars: int = MAX_ERROR_CHARS) -> str:
    """The first non-empty lines of an error message, truncated."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    text = "\n".join(lines[:max_lines])
    if len(lines) > max_lines:
        text += "\n…"
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text or "(no error message)"


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


@dataclass(frozen=True)
class RunFailure:
    """What the alert says about one failed run."""

    job_name: str
    run_id: str
    run_url: str
    error: str  # already summarized and redacted
    step_keys: Sequence[str] = field(default_factory=tuple)
    asset_keys: Sequence[str] = field(default_factory=tuple)
    partition: Optional[str] = None


def format_run_failure(failure: RunFailure) -> tuple[str, list[dict]]:
    """Slack ``(text, blocks)`` for a failed run (Block Kit limits respected)."""
    steps = _listed(list(failure.step_keys)) or "(none: the run failed outside a step)"
    lines = [f"Run failed: job {failure.job_name}", f"Failed step(s): {steps}"]
    if failure.asset_keys:
        lines.append(f"Asset(s): {_listed(list(failure.asset_keys))}")
    if failure.partition:
        lines.append(f"Partition: {failure.partition}")
    lines += [f"Error: {failure.error}", f"Run: {failure.run_url}"]
    text = "\n".join(lines)

    fields = [
        {"type": "mrkdwn", "text": f"*Job*\n`{failure.job_name}`"},
        {"type": "mrkdwn", "text": f"*Failed step(s)*\n{steps}"[:2000]},
    ]
    if failure.asset_keys:
        fields.append({"type": "mrkdwn", "text": f"*Asset(s)*\n{_listed(list(failure.asset_keys))}"[:2000]})
    if failure.partition:
        fields.append({"type": "mrkdwn", "text": f"*Partition*\n`{failure.partition}`"})
    error_block = failure.error.replace("```", "'''")
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: *Run failed:* `{failure.job_name}`"}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{error_block}```"[:3000]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"<{failure.run_url}|Open run {failure.run_id[:8]} in Dagster>"},
        },
    ]
    return text, blocks
