"""Small helpers shared by every domain: UTC time, partitions, run-config parsing."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import dagster as dg

from analytics_platform.settings import get_settings

UTC = dt.timezone.utc


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def parse_as_of(value: Optional[str]) -> dt.datetime:
    """ISO-8601 string (or None = now) -> aware UTC datetime.

    A value without an offset is taken as UTC; ``Z`` is accepted.
    """
    if value is None or str(value).strip() == "":
        return utc_now()
    text = str(value).strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise dg.Failure(
            f"as_of must be an ISO-8601 timestamp such as 2024-05-01T00:00:00Z, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def partition_day(partition_key: str) -> dt.date:
    return dt.date.fromisoformat(partition_key)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def week_start(day: dt.date) -> dt.date:
    """Monday of ``day``'s ISO week."""
    return day - dt.timedelta(days=day.weekday())


def daily_partitions(include_today: bool = False) -> dg.DailyPartitionsDefinition:
    """UTC daily partitions from ANALYTICS_START_DATE; ``include_today`` adds the current day."""
    return dg.DailyPartitionsDefinition(
        start_date=get_settings().analytics_start_date,
        timezone="UTC",
        end_offset=1 if include_today else 0,
        fmt="%Y-%m-%d",
    )


def partition_keys_of(context: dg.AssetExecutionContext) -> list[str]:
    """Every partition key of this run (one for a single partition, many for a range)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return []
    return list(context.partition_keys)


def contiguous_day_ranges(keys: list[str]) -> list[tuple[dt.date, dt.date]]:
    """Group YYYY-MM-DD keys into inclusive contiguous (first, last) day ranges."""
    days = sorted({partition_day(k) for k in keys})
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if ranges and day == ranges[-1][1] + dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges
