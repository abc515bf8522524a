"""Retry timing shared by the HTTP clients (pure helpers, no Dagster).

Exponential backoff with *full jitter* (AWS architecture blog): the n-th wait is drawn
uniformly from ``[0, min(cap, initial * 2**(n-1))]``.  A server's ``Retry-After`` (seconds
or an HTTP date) always wins over the computed wait.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Optional


def is_retryable_status(status: int) -> bool:
    """429 and 5xx are retried; every other 4xx is final."""
    return status == 429 or 500 <= status <= 599


def backoff_delay(
    attempt: int,
    initial: float,
    cap: float,
    rng: Optional[random.Random] = None,
) -> float:
    """Full-jitter wait before retry number ``attempt`` (1 = first retry)."""
    ceiling = min(cap, initial * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0.0, max(0.0, ceiling))


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def retry_delay(
    attempt: int,
    initial: float,
    cap: float,
    retry_after: Optional[str] = None,
    rng: Optional[random.Random] = None,
) -> float:
    """The wait before retry ``attempt``: ``Retry-After`` when given, else full-jitter backoff."""
    honoured = parse_retry_after(retry_after)
    if honoured is not None:
        return honoured
    return backoff_delay(attempt, initial, cap, rng)
