"""PostgreSQL I/O of the engagement domain (no Dagster): schema, extraction pages with
their cursor, set-based aggregates, and transactional partition replacement.

Every function takes an open SQLAlchemy ``Connection`` inside the caller's transaction
(``with app_db.begin() as conn``) unless it says otherwise, so the caller decides what is
atomic. Statements live in ``analytics_platform/sql/engagement/postgres/*.sql``.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from analytics_platform.engagement.extraction import SplitDocuments
from analytics_platform.engagement.rules import AGGREGATE_COLUMNS, MILESTONE_COLUMNS, SIGNAL_COLUMNS, WEEK
from analytics_platform.common import read_postgres_sql
from analytics_platform.resources.firestore import EventCursor
from analytics_platform.common import read_sql

EVENTS_TABLE = "firestore_app_usage_events"
REJECTS_TABLE = "firestore_app_usage_event_rejects"
CURSORS_TABLE = "extraction_cursors"
SIGNALS_TABLE = "user_engagement_signals"
MILESTONES_TABLE = "user_milestones"
AGGREGATES_TABLE = "user_engagement_aggregates"
GOAL_TABLES = ("goal_sub_categories", "goals", "user_goals", "apps", "app_goal_sub_categories")

# table -> its columns in order (what COPY writes)
_OUTPUT_COLUMNS = {
    SIGNALS_TABLE: (*SIGNAL_COLUMNS[:1], "as_of_date", *SIGNAL_COLUMNS[1:], "computed_at"),
    MILESTONES_TABLE: (*MILESTONE_COLUMNS[:1], "as_of_date", *MILESTONE_COLUMNS[1:], "computed_at"),
    AGGREGATES_TABLE: (*AGGREGATE_COLUMNS[:1], "as_of_date", *AGGREGATE_COLUMNS[1:], "computed_at"),
}


def sql(name: str) -> str:
    """The statement of ``sql/engagement/postgres/<name>.sql`` without its comments: a
    ``:user_ids`` named in a comment would be bound there too (see ``strip_sql_comments``)."""
    return read_postgres_sql(f"engagement/postgres/{name}")


def ensure_schema(conn: sa.Connection) -> None:
    """Create the engagement tables if absent (idempotent, serialised by an advisory lock)."""
    conn.exec_driver_sql(sql("schema"))


def ensure_goal_tables(conn: sa.Connection) -> None:
    """Create the application's goal tables when absent: local demo and tests only."""
    conn.exec_driver_sql(sql("goal_tables"))


def missing_goal_tables(conn: sa.Connection) -> list[str]:
    return [
        name
        for name in GOAL_TABLES
        if not conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": f"public.{name}"}).scalar()
    ]


# ---------------------------------------------------------------------------- extraction
def read_cursor(conn: sa.Connection, source: str, for_update: bool = False) -> Optional[EventCursor]:
    row = conn.execute(
        sa.text(
            f"SELECT cursor_timestamp, cursor_document_path FROM {CURSORS_TABLE} WHERE source = :source"
            + (" FOR UPDATE" if for_update else "")
        ),
        {"source": source},
    ).first()
    if row is None:
        return None
    return EventCursor(row[0].astimezone(dt.timezone.utc), row[1])


@dataclass
class PageCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    def add(self, other: "PageCounts") -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected


_UPSERT_EVENTS = f"""
INSERT INTO {EVENTS_TABLE} AS t
    (document_path, user_id, event_id, app_id, foreground_time_ms, session_id, event_timestamp, extracted_at)
VALUES %s
ON CONFLICT (document_path) DO UPDATE SET
    user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id, app_id = EXCLUDED.app_id,
    foreground_time_ms = EXCLUDED.foreground_time_ms, session_id = EXCLUDED.session_id,
    event_timestamp = EXCLUDED.event_timestamp, extracted_at = EXCLUDED.extracted_at
WHERE (t.user_id, t.event_id, t.app_id, t.foreground_time_ms, t.session_id, t.event_timestamp)
      IS DISTINCT FROM
      (EXCLUDED.user_id, EXCLUDED.event_id, EXCLUDED.app_id, EXCLUDED.foreground_time_ms,
       EXCLUDED.session_id, EXCLUDED.event_timestamp)
RETURNING (xmax = 0) AS inserted
"""

_UPSERT_REJECTS = f"""
INSERT INTO {REJECTS_TABLE} AS r
    (document_path, user_id, event_id, reasons, raw_fields, event_timestamp, first_seen_at, last_seen_at)
VALUES %s
ON CONFLICT (document_path) DO UPDATE SET
    user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id, reasons = EXCLUDED.reasons,
    raw_fields = EXCLUDED.raw_fields, event_timestamp = EXCLUDED.event_timestamp,
    last_seen_at = EXCLUDED.last_seen_at
"""


def _dbapi_cursor(conn: sa.Connection):
    return conn.connection.dbapi_connection.cursor()


def write_page(
    conn: sa.Connection,
    source: str,
    split: SplitDocuments,
    cursor: EventCursor,
    documents_read: int,
    now: dt.datetime,
) -> PageCounts:
    """Upsert one page's valid events and rejects, and advance the cursor, in ``conn``'s
    transaction (so the data and the position commit together or not at all)."""
    from psycopg2.extras import execute_values

    counts = PageCounts(rejected=len(split.rejects))
    valid = list({row["document_path"]: row for row in split.valid}.values())  # one row per path
    rejects = list({row["document_path"]: row for row in split.rejects}.values())
    cur = _dbapi_cursor(conn)
    try:
        if valid:
            returned = execute_values(
                cur,
                _UPSERT_EVENTS,
                [
                    (r["document_path"], r["user_id"], r["event_id"], r["app_id"], r["foreground_time_ms"],
                     r["session_id"], r["event_timestamp"], now)
                    for r in valid
                ],
                page_size=len(valid),
                fetch=True,
            )
            counts.inserted = sum(1 for (inserted,) in returned if inserted)
            counts.updated = len(returned) - counts.inserted
            counts.unchanged = len(valid) - len(returned)
            cur.execute(
                f"DELETE FROM {REJECTS_TABLE} WHERE document_path = ANY(%s)",
                ([r["document_path"] for r in valid],),
            )
        if rejects:
            execute_values(
                cur,
                _UPSERT_REJECTS,
                [
                    (r["document_path"], r["user_id"], r["event_id"], r["reasons"], r["raw_fields"],
                     r["event_timestamp"], now, now)
                    for r in rejects
                ],
                page_size=len(rejects),
            )
            # a document that was valid before and is invalid now leaves the events table
            cur.execute(
                f"DELETE FROM {EVENTS_TABLE} WHERE document_path = ANY(%s)",
                ([r["document_path"] for r in rejects],),
            )
    finally:
        cur.close()
    advance_cursor(conn, source, cursor, documents_read, now)
    return counts


def advance_cursor(
    conn: sa.Connection, source: str, cursor: EventCursor, documents_read: int, now: dt.datetime
) -> EventCursor:
    """Store ``cursor`` unless the stored one is already further (the cursor never moves
    back, in Firestore's order); add ``documents_read`` to the running total."""
    stored = read_cursor(conn, source, for_update=True)
    target = cursor if stored is None or cursor.key() > stored.key() else stored
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {CURSORS_TABLE} AS c
                (source, cursor_timestamp, cursor_document_path, documents_read_total, updated_at)
            VALUES (:source, :ts, :path, :n, :now)
            ON CONFLICT (source) DO UPDATE SET
                cursor_timestamp = EXCLUDED.cursor_timestamp,
                cursor_document_path = EXCLUDED.cursor_document_path,
                documents_read_total = c.documents_read_total + EXCLUDED.documents_read_total,
                updated_at = EXCLUDED.updated_at
            """
        ),
        {"source": source, "ts": target.timestamp, "path": target.path, "n": documents_read, "now": now},
    )
    return target


def table_count(conn: sa.Connection, table: str) -> int:
    if table not in (EVENTS_TABLE, REJECTS_TABLE, SIGNALS_TABLE, MILESTONES_TABLE, AGGREGATES_TABLE):
        raise ValueError(f"unknown table {table}")
    return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


# ---------------------------------------------------------------------------- rules inputs
def _user_params(user_ids: Optional[Sequence[str]]) -> dict:
    if user_ids is None:
        return {"all_users": True, "user_ids": []}
    return {"all_users": False, "user_ids": list(user_ids)}


_BIND = re.compile(r"(?<![:\w]):(\w+)")


def copy_out(conn: sa.Connection, statement: str, params: dict, string_columns: Sequence[str] = ("user_id",)) -> pd.DataFrame:
    """Run a SELECT through ``COPY (...) TO STDOUT`` and parse the CSV with Arrow: much
    faster than row-by-row fetching for 100k+ rows. ``:name`` parameters are bound
    client-side by psycopg2 (quoted, never formatted in)."""
    cur = _dbapi_cursor(conn)
    try:
        bound = cur.mogrify(_BIND.sub(r"%(\1)s", statement.replace("%", "%%")), params).decode()
        buffer = io.BytesIO()
        cur.copy_expert(f"COPY (\n{bound}\n) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer)
    finally:
        cur.close()
    buffer.seek(0)
    table = pa_csv.read_csv(
        buffer,
        convert_options=pa_csv.ConvertOptions(
            true_values=["t"], false_values=["f"],
            column_types={c: pa.string() for c in string_columns},
            strings_can_be_null=False,
        ),
    )
    return table.to_pandas()


def week_boundaries(as_of: dt.datetime) -> dict[str, dt.datetime]:
    """``b1`` .. ``b10`` = T − 7k days: week k is [b(k+1), b(k)) with b0 = T."""
    return {f"b{k}": as_of - k * WEEK for k in range(1, 11)}


def _delete_partition(conn: sa.Connection, table: str, as_of_date: dt.date, user_ids: Optional[Sequence[str]]) -> int:
    if table not in _OUTPUT_COLUMNS:
        raise ValueError(f"unknown table {table}")
    if user_ids is None:
        result = conn.execute(sa.text(f"DELETE FROM {table} WHERE as_of_date = :d"), {"d": as_of_date})
    else:
        result = conn.execute(
            sa.text(f"DELETE FROM {table} WHERE as_of_date = :d AND user_id = ANY(:ids)"),
            {"d": as_of_date, "ids": list(user_ids)},
        )
    return int(result.rowcount or 0)


def write_aggregates(
    conn: sa.Connection,
    as_of: dt.datetime,
    as_of_date: dt.date,
    computed_at: dt.datetime,
    user_ids: Optional[Sequence[str]] = None,
) -> int:
    """Replace the partition's rows of ``user_engagement_aggregates`` (only ``user_ids``' when
    given) by the aggregates as of ``as_of``, computed and inserted inside PostgreSQL (one
    set-based statement, ``sql/engagement/postgres/user_aggregates.sql``). Returns the rows."""
    conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
    _delete_partition(conn, AGGREGATES_TABLE, as_of_date, user_ids)
    columns = ", ".join((*AGGREGATE_COLUMNS, "as_of_date", "computed_at"))
    statement = (
        f"INSERT INTO {AGGREGATES_TABLE} ({columns}) "
        "SELECT q.*, CAST(:as_of_date AS date), CAST(:computed_at AS timestamptz) "
        f"FROM (\n{sql('user_aggregates')}\n) AS q"
    )
    result = conn.execute(
        sa.text(statement),
        {"as_of": as_of, "as_of_date": as_of_date, "computed_at": computed_at,
         **week_boundaries(as_of), **_user_params(user_ids)},
    )
    return int(result.rowcount or 0)


def read_aggregates(
    conn: sa.Connection, as_of_date: dt.date, user_ids: Optional[Sequence[str]] = None
) -> pd.DataFrame:
    """The partition's aggregates (rules.AGGREGATE_COLUMNS), one row per evaluated user."""
    statement = (
        f"SELECT {', '.join(AGGREGATE_COLUMNS)} FROM {AGGREGATES_TABLE} "
        "WHERE as_of_date = CAST(:as_of_date AS date) AND (:all_users OR user_id = ANY(:user_ids))"
    )
    return copy_out(conn, statement, {"as_of_date": as_of_date, **_user_params(user_ids)})


def load_milestone_inputs(
    conn: sa.Connection, as_of_date: dt.date, user_ids: Optional[Sequence[str]] = None
) -> pd.DataFrame:
    """Stored signals of ``as_of_date`` plus the tier flags stored with them
    (rules.MILESTONE_INPUT_COLUMNS and ``aggregates_found``)."""
    return copy_out(conn, sql("milestone_inputs"), {"as_of_date": as_of_date, **_user_params(user_ids)})


# ---------------------------------------------------------------------------- outputs
@dataclass
class ReplaceCounts:
    deleted: int
    inserted: int


def replace_partition_rows(
    conn: sa.Connection,
    table: str,
    frame: pd.DataFrame,
    as_of_date: dt.date,
    computed_at: dt.datetime,
    user_ids: Optional[Sequence[str]] = None,
) -> ReplaceCounts:
    """Replace the rows of ``as_of_date`` (only those of ``user_ids`` when given) by
    ``frame``, in ``conn``'s transaction: DELETE, then COPY."""
    columns = _OUTPUT_COLUMNS[table]
    deleted = _delete_partition(conn, table, as_of_date, user_ids)
    out = frame.sort_values("user_id", kind="stable")  # primary-key order: cheaper index inserts
    out["as_of_date"] = as_of_date
    out["computed_at"] = computed_at.astimezone(dt.timezone.utc).isoformat()
    buffer = io.BytesIO()
    pa_csv.write_csv(
        pa.Table.from_pandas(out[list(columns)], preserve_index=False),
        buffer,
        write_options=pa_csv.WriteOptions(include_header=False),
    )
    buffer.seek(0)
    cur = _dbapi_cursor(conn)
    try:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cur.close()
    return ReplaceCounts(deleted=deleted, inserted=len(out))


# ---------------------------------------------------------------------------- checks
@dataclass
class PartitionStats:
    rows: int
    distinct_users: int
    empty_user_ids: int


def partition_stats(conn: sa.Connection, table: str, as_of_date: dt.date) -> PartitionStats:
    if table not in _OUTPUT_COLUMNS:
        raise ValueError(f"unknown table {table}")
    row = conn.execute(
        sa.text(
            f"""SELECT count(*), count(DISTINCT user_id),
                       count(*) FILTER (WHERE user_id IS NULL OR user_id = '')
                FROM {table} WHERE as_of_date = :d"""
        ),
        {"d": as_of_date},
    ).one()
    return PartitionStats(int(row[0]), int(row[1]), int(row[2]))


def milestones_without_goal_setting(conn: sa.Connection, as_of_date: dt.date) -> int:
    """Rows of ``as_of_date`` with a tier milestone but no completed goal setting."""
    any_tier = " OR ".join(c for c in MILESTONE_COLUMNS if c.startswith("tier"))
    return int(
        conn.execute(
            sa.text(
                f"SELECT count(*) FROM {MILESTONES_TABLE} "
                f"WHERE as_of_date = :d AND NOT goal_setting_complete AND ({any_tier})"
            ),
            {"d": as_of_date},
        ).scalar()
    )


def milestone_users_not_in_signals(conn: sa.Connection, as_of_date: dt.date) -> tuple[int, int]:
    """(milestone rows without a signals row, signals rows without a milestone row)."""
    row = conn.execute(
        sa.text(
            f"""SELECT
                  (SELECT count(*) FROM {MILESTONES_TABLE} m WHERE m.as_of_date = :d AND NOT EXISTS
                     (SELECT 1 FROM {SIGNALS_TABLE} s WHERE s.as_of_date = :d AND s.user_id = m.user_id)),
                  (SELECT count(*) FROM {SIGNALS_TABLE} s WHERE s.as_of_date = :d AND NOT EXISTS
                     (SELECT 1 FROM {MILESTONES_TABLE} m WHERE m.as_of_date = :d AND m.user_id = s.user_id))"""
        ),
        {"d": as_of_date},
    ).one()
    return int(row[0]), int(row[1])
