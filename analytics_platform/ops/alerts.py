"""Run-failure alert text (pure functions, no Dagster): error summary, scrubbing, message."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    partition: str | None = None


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


# ----------------------------------------------------------------------------- freshness episodes
# A freshness episode starts when a check of an asset that has been fresh on this instance
# fails, and ends when the check passes again: one message at each end, whatever the number
# of evaluations in between.
FRESH, STALE, NEVER_FRESH, UNKNOWN = "fresh", "stale", "never_fresh", "unknown"
STALE_MESSAGE, RECOVERED_MESSAGE = "stale", "recovered"
PERMANENT_FAILURE_ATTEMPTS = 3


@dataclass(frozen=True)
class EpisodeState:
    """What the alert sensor remembers about one freshness check (in its cursor)."""

    status: str = UNKNOWN
    last_record_id: int = 0  # the latest evaluation already looked at
    since: str | None = None  # ISO time the current status began (its evaluation)
    pending: str | None = None  # a message not delivered yet: STALE_MESSAGE / RECOVERED_MESSAGE
    attempts: int = 0  # delivery attempts of ``pending``
    description: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> EpisodeState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def advance_episode(
    state: EpisodeState, record_id: int, passed: bool, has_been_fresh: bool, at: str, description: str
) -> EpisodeState:
    """The state after a new evaluation; ``pending`` names the message to send, if any.

    passed                      -> fresh; a recovery message if an alerted episode was open
                                   (a stale message never delivered is dropped instead)
    failed, been fresh here     -> stale; one stale message when it was not stale already
    failed, never fresh here    -> never_fresh; no message (the check is a WARN)
    """
    base = {"last_record_id": record_id, "description": description}
    if passed:
        if state.status == STALE:
            if state.pending == STALE_MESSAGE:  # the episode was never announced: nothing to close
                return EpisodeState(FRESH, since=at, **base)
            return EpisodeState(FRESH, since=at, pending=RECOVERED_MESSAGE, **base)
        if state.status == FRESH:  # a recovery message not delivered yet stays pending
            return EpisodeState(FRESH, since=state.since, pending=state.pending, attempts=state.attempts, **base)
        return EpisodeState(FRESH, since=at, **base)
    if not has_been_fresh:
        return EpisodeState(NEVER_FRESH, since=state.since if state.status == NEVER_FRESH else at, **base)
    if state.status == STALE:
        return EpisodeState(STALE, since=state.since, pending=state.pending, attempts=state.attempts, **base)
    if state.pending == RECOVERED_MESSAGE:  # recovered, not announced yet, stale again: same episode
        return EpisodeState(STALE, since=at, **base)
    return EpisodeState(STALE, since=at, pending=STALE_MESSAGE, **base)


def after_delivery(state: EpisodeState, delivered: bool, permanent: bool) -> tuple[EpisodeState, bool]:
    """(new state, gave_up): a delivered message is done; an undelivered one stays pending
    unless the error is permanent and has been met ``PERMANENT_FAILURE_ATTEMPTS`` times."""
    if delivered:
        return EpisodeState(**{**state.to_dict(), "pending": None, "attempts": 0}), False
    attempts = state.attempts + 1
    if permanent and attempts >= PERMANENT_FAILURE_ATTEMPTS:
        return EpisodeState(**{**state.to_dict(), "pending": None, "attempts": 0}), True
    return EpisodeState(**{**state.to_dict(), "attempts": attempts}), False


def format_freshness_message(
    asset_key: str, state: EpisodeState, asset_url: str
) -> tuple[str, list[dict]]:
    """Slack ``(text, blocks)`` for the start (stale) or the end (recovered) of an episode."""
    if state.pending == STALE_MESSAGE:
        head = f":hourglass: Stale: {asset_key}"
        body = f"{state.description}\nStale since {state.since}. One message per episode: the next one says when it is fresh again."
    else:
        head = f":white_check_mark: Fresh again: {asset_key}"
        body = f"{state.description}\nFresh since {state.since}."
    body = scrub(body)
    text = f"{head}\n{body}\n{asset_url}"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*"[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{asset_url}|Open {asset_key} in Dagster>"}},
    ]
    return text, blocks
