"""Helpers shared by every domain, written once: UTC time (now, ``as_of``, midnight, week
start, epoch microseconds), daily partitions, NULL-safe counts, and the SQL file
convention (read a ``.sql`` file, format validated identifiers into it, strip comments
before binding Postgres parameters)."""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg

from analytics_platform.settings import get_settings

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
SQL_DIR = Path(__file__).resolve().parent / "sql"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (a naive value is taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


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
    return as_utc(parsed)


def partition_day(partition_key: str) -> dt.date:
    return dt.date.fromisoformat(partition_key)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def week_start(day: dt.date) -> dt.date:
    """Monday of ``day``'s ISO week."""
    return day - dt.timedelta(days=day.weekday())


def to_epoch_micros(ts: dt.datetime) -> int:
    """Microseconds since the Unix epoch (exact integer arithmetic; naive = UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(value: int) -> dt.datetime:
    """The aware UTC datetime ``value`` microseconds after the Unix epoch."""
    return EPOCH + dt.timedelta(microseconds=int(value))


def to_int(value: Any) -> int:
    """A count from a query row: None / NaN / pandas NA (an empty aggregate) -> 0."""
    if value is None:
        return 0
    try:
        if value != value:  # NaN
            return 0
        return int(value)
    except (TypeError, ValueError):
        return 0


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


# --- SQL files: one convention for the warehouse (BigQuery dialect) and PostgreSQL -----
# Values are always bound parameters (``@name`` in warehouse SQL, ``:name`` in Postgres
# SQL); only identifiers (dataset, table) are formatted in as ``{placeholder}``, validated;
# an optional part of a statement is a fragment file of its own, formatted in by name
# (``render_sql(read_sql("kpis/inactive_users"), fragments={"session_activity": ...})``).


def validate_identifier(name: str) -> str:
    """Return ``name`` if it is a safe dataset/table/column identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or "\n" in name:
        raise ValueError(
            f"Invalid identifier {name!r}: use letters, digits and underscores only "
            "(starting with a letter or underscore)."
        )
    return name


@functools.lru_cache(maxsize=None)
def read_sql(name: str) -> str:
    """The text of ``analytics_platform/sql/<name>.sql``."""
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"No SQL file {path}")
    return path.read_text(encoding="utf-8")


def render_sql(sql: str, fragments: Optional[Mapping[str, str]] = None, **identifiers: str) -> str:
    """Format the ``{placeholders}`` of ``sql``: identifiers (validated) and, for an
    optional part of a statement, ``fragments`` - the text of another ``.sql`` file
    (``read_sql(...)``) or ``""``.  Never a value: values are bound parameters."""
    values = {k: validate_identifier(v) for k, v in identifiers.items()}
    values.update(fragments or {})
    return sql.format(**values)


def strip_sql_comments(sql: str) -> str:
    """``sql`` without its ``--`` and ``/* */`` comments (string literals and quoted
    identifiers are kept as they are).

    Run SQL files through this before ``sqlalchemy.text()``: SQLAlchemy turns every
    ``:name`` into a bind parameter, comments included, and psycopg2 binds parameters
    client-side, so a value holding a newline (a user id, say) placed into a ``--`` comment
    would end the comment and become part of the statement.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # a doubled quote inside the literal
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end  # the newline itself is kept
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            out.append(" ")
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def read_postgres_sql(name: str) -> str:
    """The statement of ``sql/<name>.sql`` (Postgres SQL, e.g. ``kpis/inactive_users`` or
    ``engagement/postgres/goal_tables``) without its comments, ready for ``sa.text``."""
    return strip_sql_comments(read_sql(name))
