"""Detecting writes to ``weekly_kpi`` made by something other than ``app_db/weekly_kpi``.

No Dagster here; ``sensors.py`` wraps :func:`evaluate`.

How a write is told apart: every run of the asset stamps the rows it writes with one
``updated_at`` value (its *watermark*) and records that value in
``weekly_kpi_recalc_runs`` in the same transaction, so a row whose ``updated_at`` equals a
recorded watermark is the asset's own write — atomically, with no window in which the
sensor could see the rows before the marker.  Every other row with a newer ``updated_at``
is a foreign write (the daily KPI batch).

The cursor keeps ``hi`` (the newest foreign ``updated_at`` seen) and ``count`` (foreign
rows with ``updated_at > low``, ``low = hi - overlap``).  A tick fires when a foreign row
newer than ``hi`` appears, or when the count in ``(low, hi]`` grew — a writer whose
transaction started earlier but committed after the last tick (PostgreSQL's ``now()`` is
the transaction start).  The asset's own runs only ever turn foreign rows into own rows,
which lowers the count, so they never trigger.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

from analytics_platform.kpis.recalc import read_sql

UTC = dt.timezone.utc
DEFAULT_OVERLAP = dt.timedelta(hours=1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cursor:
    hi: Optional[dt.datetime]
    low: dt.datetime
    count: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "hi": self.hi.isoformat() if self.hi else None,
                "low": self.low.isoformat(),
                "count": self.count,
            }
        )

    @classmethod
    def from_json(cls, text: Optional[str]) -> Optional["Cursor"]:
        if not text:
            return None
        data = json.loads(text)
        hi = dt.datetime.fromisoformat(data["hi"]) if data.get("hi") else None
        return cls(hi=hi, low=dt.datetime.fromisoformat(data["low"]), count=int(data["count"]))


@dataclass(frozen=True)
class Decision:
    """``fire``: request a recalculation.  ``cursor``: the cursor to store (None: keep)."""

    fire: bool
    cursor: Optional[Cursor]
    reason: str
    new_rows: int = 0


def _tables(conn: sa.Connection) -> set[str]:
    rows = conn.execute(
        sa.text(
            "SELECT name FROM unnest(CAST(:names AS text[])) AS t(name) "
            "WHERE to_regclass(name) IS NOT NULL"
        ),
        {"names": ["weekly_kpi", "weekly_kpi_recalc_runs"]},
    )
    return {r[0] for r in rows}


def foreign_writes(conn: sa.Connection, low: dt.datetime, own_runs_table: bool) -> tuple[int, Optional[dt.datetime]]:
    """(rows, newest updated_at) of foreign writes with updated_at > low."""
    sql = read_sql("foreign_writes").replace(
        "{own_writes_filter}", read_sql("own_writes_filter") if own_runs_table else ""
    )
    row = conn.execute(sa.text(sql), {"low": low}).one()
    hi = row.max_updated_at.astimezone(UTC) if row.max_updated_at is not None else None
    return int(row.n_rows), hi


def _cursor_at(conn: sa.Connection, hi: Optional[dt.datetime], overlap: dt.timedelta, own: bool) -> Cursor:
    low = (hi - overlap) if hi is not None else EPOCH
    count, _ = foreign_writes(conn, low, own)
    return Cursor(hi=hi, low=low, count=count)


def evaluate(
    engine: sa.Engine, cursor_text: Optional[str], overlap: dt.timedelta = DEFAULT_OVERLAP
) -> Decision:
    """One sensor tick: did something else write ``weekly_kpi`` since the cursor?

    The first tick only records where things stand (no run on deployment); the daily
    schedule covers what happened before.
    """
    with engine.connect() as conn:
        tables = _tables(conn)
        if "weekly_kpi" not in tables:
            return Decision(False, None, "weekly_kpi does not exist yet")
        own = "weekly_kpi_recalc_runs" in tables
        cursor = Cursor.from_json(cursor_text)
        if cursor is None:
            _, hi = foreign_writes(conn, EPOCH, own)
            return Decision(False, _cursor_at(conn, hi, overlap, own), "cursor initialised")
        count, hi = foreign_writes(conn, cursor.low, own)
        newer = hi is not None and (cursor.hi is None or hi > cursor.hi)
        late = count > cursor.count
        if not (newer or late):
            if count != cursor.count:  # own runs replaced foreign rows: follow, don't fire
                return Decision(False, Cursor(cursor.hi, cursor.low, count), "no foreign writes")
            return Decision(False, None, "no foreign writes")
        new_hi = max(h for h in (hi, cursor.hi) if h is not None)
        new_cursor = _cursor_at(conn, new_hi, overlap, own)
        new_rows = max(count - cursor.count, 0)
        what = f"{new_rows} row(s) written by another writer" if new_rows else "rows rewritten by another writer"
        return Decision(True, new_cursor, f"{what}, newest updated_at {new_hi.isoformat()}", new_rows)
