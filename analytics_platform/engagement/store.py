"""PostgreSQL I/O of the engagement domain: schema, extraction pages with their cursor,
set-based aggregates, transactional partition replacement, the reads of the checks — and
the orchestration of each asset's work (:func:`extract_events`, :func:`compute_signals`,
:func:`compute_milestones`), returning result dataclasses with ``.metadata()``.

The SQL functions take an open SQLAlchemy ``Connection`` inside the caller's transaction
(``with app_db.begin() as conn``) unless they say otherwise, so the caller decides what is
atomic. Statements live in ``analytics_platform/sql/engagement/postgres/*.sql``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from analytics_platform.common import UTC, read_postgres_sql, render_sql, utc_now
from analytics_platform.engagement import rules
from analytics_platform.engagement.rules import (
    AGGREGATE_COLUMNS,
    MILESTONE_COLUMNS,
    SIGNAL_COLUMNS,
    SplitDocuments,
    split_documents,
    week_boundaries,
)
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.firestore import EventCursor, FirestoreService, UntimedCounts

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
    """``read_postgres_sql("engagement/postgres/<name>")``: the statement without its
    comments (a ``:user_ids`` named in a comment would be bound there too)."""
    return read_postgres_sql(f"engagement/postgres/{name}")


class MissingInputs(RuntimeError):
    """An input of the asset is missing; retrying will not help (the message says what to do)."""


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
        if not conn.execute(sa.text(sql("check_table_exists")), {"n": f"public.{name}"}).scalar()
    ]


# ---------------------------------------------------------------------------- extraction
def read_cursor(conn: sa.Connection, source: str, for_update: bool = False) -> Optional[EventCursor]:
    lock = sql("lock_selected_rows") if for_update else ""
    statement = render_sql(sql("select_extraction_cursor"), fragments={"lock_selected_rows": lock})
    row = conn.execute(sa.text(statement), {"source": source}).first()
    if row is None or not row[1]:  # no row, or only complete_until of an empty first read
        return None
    return EventCursor(row[0].astimezone(UTC), row[1])


def read_complete_until(conn: sa.Connection, source: str) -> Optional[dt.datetime]:
    """The end of the last extraction of ``source`` that read every page (None: never)."""
    value = conn.execute(sa.text(sql("select_complete_until")), {"source": source}).scalar()
    return value.astimezone(UTC) if value is not None else None


def mark_complete_until(conn: sa.Connection, source: str, until: dt.datetime) -> None:
    """Record that every document of ``source`` with a timestamp before ``until`` was read
    (never moves back)."""
    conn.execute(sa.text(sql("update_complete_until")), {"source": source, "until": until})


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
                sql("upsert_events"),
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
            conn.execute(sa.text(sql("delete_rejects_by_path")), {"paths": [r["document_path"] for r in valid]})
        if rejects:
            execute_values(
                cur,
                sql("upsert_rejects"),
                [
                    (r["document_path"], r["user_id"], r["event_id"], r["reasons"], r["raw_fields"],
                     r["event_timestamp"], now, now)
                    for r in rejects
                ],
                page_size=len(rejects),
            )
            # a document that was valid before and is invalid now leaves the events table
            conn.execute(sa.text(sql("delete_events_by_path")), {"paths": [r["document_path"] for r in rejects]})
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
        sa.text(sql("upsert_extraction_cursor")),
        {"source": source, "ts": target.timestamp, "path": target.path, "n": documents_read, "now": now},
    )
    return target


def table_count(conn: sa.Connection, table: str) -> int:
    if table not in (EVENTS_TABLE, REJECTS_TABLE, SIGNALS_TABLE, MILESTONES_TABLE, AGGREGATES_TABLE):
        raise ValueError(f"unknown table {table}")
    return int(conn.execute(sa.text(render_sql(sql("count_table_rows"), table=table))).scalar())


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


def _delete_partition(conn: sa.Connection, table: str, as_of_date: dt.date, user_ids: Optional[Sequence[str]]) -> int:
    if table not in _OUTPUT_COLUMNS:
        raise ValueError(f"unknown table {table}")
    only = sql("only_user_ids") if user_ids is not None else ""
    statement = render_sql(sql("delete_partition_rows"), fragments={"only_user_ids": only}, table=table)
    params: dict[str, Any] = {"d": as_of_date}
    if user_ids is not None:
        params["ids"] = list(user_ids)
    result = conn.execute(sa.text(statement), params)
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
    statement = render_sql(sql("insert_user_aggregates"), fragments={"user_aggregates": sql("user_aggregates")})
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
    return copy_out(conn, sql("select_user_aggregates"), {"as_of_date": as_of_date, **_user_params(user_ids)})


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
    out["computed_at"] = computed_at.astimezone(UTC).isoformat()
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
    statement = render_sql(sql("count_partition_rows"), table=table)
    row = conn.execute(sa.text(statement), {"d": as_of_date}).one()
    return PartitionStats(int(row[0]), int(row[1]), int(row[2]))


def milestones_without_goal_setting(conn: sa.Connection, as_of_date: dt.date) -> int:
    """Rows of ``as_of_date`` with a tier milestone but no completed goal setting."""
    return int(conn.execute(sa.text(sql("count_milestones_without_goal_setting")), {"d": as_of_date}).scalar())


def milestone_users_not_in_signals(conn: sa.Connection, as_of_date: dt.date) -> tuple[int, int]:
    """(milestone rows without a signals row, signals rows without a milestone row)."""
    row = conn.execute(sa.text(sql("count_unmatched_milestone_users")), {"d": as_of_date}).one()
    return int(row[0]), int(row[1])


# ---------------------------------------------------------------------------- one asset's work
@dataclass
class ExtractionResult:
    """What one run of ``app_db/firestore_app_usage_events`` read and wrote."""

    source: str
    full_refresh: bool
    totals: PageCounts
    documents_read: int = 0
    out_of_scope: int = 0
    pages: int = 0
    cursor: Optional[EventCursor] = None
    untimed: Optional[UntimedCounts] = None
    total_rows: int = 0
    rejects_total: int = 0
    complete_until: Optional[dt.datetime] = None
    untimed_error: str = ""

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "dagster/row_count": self.total_rows,
            "documents_read": self.documents_read,
            "pages": self.pages,
            "inserted": self.totals.inserted,
            "updated": self.totals.updated,
            "unchanged": self.totals.unchanged,
            "rejected": self.totals.rejected,
            "out_of_scope": self.out_of_scope,
            "rejects_total": self.rejects_total,
            "full_refresh": self.full_refresh,
            "source": self.source,
            "cursor_timestamp": self.cursor.timestamp.isoformat() if self.cursor else "",
        }
        if self.untimed is not None:
            metadata["without_valid_timestamp"] = self.untimed.without_valid_timestamp
            metadata["future_dated"] = self.untimed.future_dated
        if self.untimed_error:
            metadata["untimed_count_error"] = self.untimed_error
        metadata["complete_until"] = self.complete_until.isoformat() if self.complete_until else ""
        return metadata


DEFAULT_REREAD_WINDOW_HOURS = 72
DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS = 30.0


class FirestoreUnavailable(RuntimeError):
    """Firestore (or its local export) could not be read: nothing was computed or written."""


class IncompleteMirror(RuntimeError):
    """The mirror does not hold every event before T (so no numbers are computed)."""


def _count_untimed(firestore: FirestoreService, until: dt.datetime, timeout: float, result: "ExtractionResult", log) -> None:
    """The untimed-document count, bounded by ``timeout`` and never fatal: a failure or a
    timeout is logged and reported (``untimed_count_error``), the run goes on."""
    try:
        result.untimed = firestore.count_untimed_documents(until=until, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a side count must never fail the run
        result.untimed_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning(
            f"Counting the documents without a valid timestamp failed or exceeded {timeout:g}s "
            f"({result.untimed_error}); the extraction itself is complete, the count is skipped this run."
        )


def extract_events(
    app_db: AppDatabase,
    firestore: FirestoreService,
    *,
    full_refresh: bool,
    page_size: int,
    max_documents: Optional[int],
    reread_window_hours: float = DEFAULT_REREAD_WINDOW_HOURS,
    count_untimed: bool = True,
    untimed_count_timeout: float = DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS,
    log: logging.Logger,
) -> ExtractionResult:
    """Read the Firestore event documents from ``reread_window_hours`` before the stored
    cursor (late writes with an older ``timestamp``; all of them with ``full_refresh``) up to
    now, page by page; each page's valid events, rejects and the new cursor commit in one
    transaction. A run that read every page up to now records ``complete_until`` = now:
    the mirror then holds every document with a timestamp before it (late writes aside).

    Firestore failures raise :class:`FirestoreUnavailable` (naming the cause) after the
    client's own retries; pages committed before stay (the next run continues)."""
    now = utc_now()
    with app_db.begin() as conn:
        ensure_schema(conn)
        stored = read_cursor(conn, firestore.source_name)
    after = None if full_refresh else stored
    since = None
    if after is not None and reread_window_hours > 0:
        since = after.timestamp - dt.timedelta(hours=reread_window_hours)
        after = None
    log.info(
        f"Reading {firestore.describe()} "
        + (f"after {stored.timestamp.isoformat()}" if after else ("from " + since.isoformat() if since else "from the start"))
    )

    result = ExtractionResult(source=firestore.describe(), full_refresh=full_refresh, totals=PageCounts(), cursor=stored)
    try:
        for page in firestore.iter_event_pages(
            after, since=since, until=now, page_size=page_size, max_documents=max_documents
        ):
            split = split_documents(page.documents, firestore.root_collection, firestore.events_subcollection)
            with app_db.begin() as conn:
                counts = write_page(conn, firestore.source_name, split, page.cursor, len(page.documents), now)
                result.cursor = read_cursor(conn, firestore.source_name)
            result.totals.add(counts)
            result.documents_read += len(page.documents)
            result.out_of_scope += split.out_of_scope
            result.pages += 1
            for reject in split.rejects[:5]:
                log.warning(f"Rejected {reject['document_path']}: {reject['reasons']}")
    except FirestoreUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any read failure: name it, write nothing more
        raise FirestoreUnavailable(
            f"Reading {firestore.describe()} failed ({type(exc).__name__}: {str(exc)[:300]}); "
            f"{result.documents_read} document(s) were read and committed before the failure, "
            "the mirror is incomplete and no signals were computed."
        ) from exc
    if max_documents is None or result.documents_read < max_documents:
        with app_db.begin() as conn:
            mark_complete_until(conn, firestore.source_name, now)
        result.complete_until = now

    if count_untimed:
        _count_untimed(firestore, now, untimed_count_timeout, result, log)
    with app_db.begin() as conn:
        result.total_rows = table_count(conn, EVENTS_TABLE)
        result.rejects_total = table_count(conn, REJECTS_TABLE)
    if result.totals.rejected:
        log.warning(
            f"{result.totals.rejected} document(s) with a missing or ill-typed field were skipped and "
            f"quarantined in {REJECTS_TABLE}."
        )
    if result.untimed and result.untimed.without_valid_timestamp:
        log.warning(
            f"{result.untimed.without_valid_timestamp} document(s) of the collection group have no valid "
            "`timestamp` and cannot be read incrementally (see docs/engagement.md)."
        )
    return result


@dataclass
class MirrorSync:
    """Whether a signals run had to read Firestore to bring the mirror up to T, and what it read."""

    as_of: dt.datetime
    complete_until_before: Optional[dt.datetime]
    extraction: Optional[ExtractionResult]  # None: the mirror was already current

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"mirror_synced": self.extraction is not None}
        if self.extraction is not None:
            metadata["mirror_documents_read"] = self.extraction.documents_read
            metadata["mirror_inserted"] = self.extraction.totals.inserted
            metadata["mirror_updated"] = self.extraction.totals.updated
            metadata["mirror_rejected"] = self.extraction.totals.rejected
            if self.extraction.untimed is not None:
                metadata["without_valid_timestamp"] = self.extraction.untimed.without_valid_timestamp
            if self.extraction.untimed_error:
                metadata["untimed_count_error"] = self.extraction.untimed_error
        return metadata


def mirror_needs_sync(
    complete_until: Optional[dt.datetime],
    as_of: dt.datetime,
    now: dt.datetime,
    reread_window: dt.timedelta,
    max_age: dt.timedelta,
) -> bool:
    """Pure: must a run computing as of ``as_of`` read Firestore first?

    Not when the last complete read ended at or after ``as_of + reread_window`` (late writes
    for T are assumed to arrive within the window: a backfill of old days reads nothing),
    nor when it ended less than ``max_age`` ago (several partitions of one daily tick share
    one read); otherwise yes (also on a fresh instance: nothing was read yet)."""
    if complete_until is None:
        return True
    if complete_until >= as_of + reread_window:
        return False
    return complete_until < now - max_age


def ensure_mirror_current(
    app_db: AppDatabase,
    firestore: FirestoreService,
    as_of: dt.datetime,
    *,
    reread_window_hours: float = DEFAULT_REREAD_WINDOW_HOURS,
    max_age_minutes: float = 0,
    untimed_count_timeout: float = DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS,
    log: logging.Logger,
) -> MirrorSync:
    """Bring the mirror up to ``as_of`` (incrementally, from the stored cursor) unless it is
    already current; raise :class:`FirestoreUnavailable` / :class:`IncompleteMirror` rather
    than let numbers be computed on an incomplete mirror."""
    now = utc_now()
    if as_of > now:
        raise IncompleteMirror(
            f"as of {as_of.isoformat()} is in the future: the day is not over, its events are not all "
            "written yet (materialize a past partition)."
        )
    with app_db.begin() as conn:
        ensure_schema(conn)
        before = read_complete_until(conn, firestore.source_name)
    window = dt.timedelta(hours=reread_window_hours)
    if not mirror_needs_sync(before, as_of, now, window, dt.timedelta(minutes=max_age_minutes)):
        log.info(f"Mirror current: complete until {before.isoformat()}, no Firestore read needed for {as_of.isoformat()}")
        return MirrorSync(as_of, before, None)
    extraction = extract_events(
        app_db, firestore, full_refresh=False, page_size=1000, max_documents=None,
        reread_window_hours=reread_window_hours, count_untimed=True,
        untimed_count_timeout=untimed_count_timeout, log=log,
    )
    if extraction.complete_until is None or extraction.complete_until < as_of:
        raise IncompleteMirror(f"the mirror is complete only until {extraction.complete_until}, not {as_of.isoformat()}")
    return MirrorSync(as_of, before, extraction)


@dataclass
class PartitionResult:
    """What one run of ``user_engagement_signals`` or ``user_milestones`` wrote for ``day``."""

    day: dt.date
    as_of: dt.datetime
    users: Optional[list[str]]  # the requested users (None: the whole partition)
    frame: pd.DataFrame  # the rows computed (signals or milestones)
    written: ReplaceCounts
    stats: PartitionStats  # the partition after the write

    def _common(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.stats.rows,
            "as_of": self.as_of.isoformat(),
            "mode": "user_ids" if self.users else "partition",
            "users_evaluated": len(self.frame),
            "rows_written": self.written.inserted,
            "rows_replaced": self.written.deleted,
        }

    def _unmatched(self) -> int:
        return len(set(self.users or ()) - set(self.frame["user_id"]))


@dataclass
class SignalsResult(PartitionResult):
    def metadata(self) -> dict[str, Any]:
        metadata = {
            **self._common(),
            **{f"true_{flag}": int(self.frame[flag].sum()) for flag in rules.SIGNAL_FLAGS},
            "events_counted": int(self.frame["event_count"].sum()),
        }
        if self.users:
            metadata["users_requested"] = len(self.users)
            metadata["users_without_goal_or_event"] = self._unmatched()
        return metadata


@dataclass
class MilestonesResult(PartitionResult):
    without_goal_setting: int = 0  # rows with a tier milestone but no completed goal setting
    milestones_without_signals: int = 0
    signals_without_milestones: int = 0

    def metadata(self) -> dict[str, Any]:
        metadata = {
            **self._common(),
            **{f"true_{flag}": int(self.frame[flag].sum()) for flag in rules.MILESTONE_FLAGS},
        }
        if self.users:
            metadata["users_requested"] = len(self.users)
            metadata["users_without_signals_row"] = self._unmatched()
        return metadata


def write_signals_partition(
    app_db: AppDatabase, day: dt.date, users: Optional[list[str]], log: logging.Logger
) -> SignalsResult:
    """Aggregate (inside PostgreSQL), evaluate the signal rules and replace the partition's
    rows of ``user_engagement_signals`` and ``user_engagement_aggregates`` (only ``users``'
    when given), in one transaction."""
    as_of = rules.as_of_for_day(day)
    with app_db.connect() as conn:
        missing = missing_goal_tables(conn)
    if missing:
        raise MissingInputs(
            f"The application database lacks the goal tables {', '.join(missing)}. They belong to "
            "the application (check APP_DATABASE_URL); locally, seed them with "
            "`python -m analytics_platform.demo --domain engagement`."
        )
    computed_at = utc_now()
    with app_db.begin() as conn:
        ensure_schema(conn)
        write_aggregates(conn, as_of, day, computed_at, users)  # set-based, inside PostgreSQL
        aggregates = read_aggregates(conn, day, users)
        signals = rules.compute_signals(aggregates)
        written = replace_partition_rows(conn, SIGNALS_TABLE, signals, day, computed_at, users)
    with app_db.connect() as conn:
        stats = partition_stats(conn, SIGNALS_TABLE, day)
    log.info(
        f"Signals as of {as_of.isoformat()}: {len(signals)} user(s) evaluated"
        + (f" of {len(users)} requested" if users else "")
    )
    return SignalsResult(day, as_of, users, signals, written, stats)


def write_milestones_partition(
    app_db: AppDatabase, day: dt.date, users: Optional[list[str]], log: logging.Logger
) -> MilestonesResult:
    """Evaluate the milestone rules on the partition's stored signals and replace the
    partition's rows of ``user_milestones`` (only ``users``' when given), in one transaction."""
    as_of = rules.as_of_for_day(day)
    computed_at = utc_now()
    with app_db.begin() as conn:
        ensure_schema(conn)
        inputs = load_milestone_inputs(conn, day, users)
        if not inputs.empty and not inputs["aggregates_found"].all():
            raise MissingInputs(
                f"{int((~inputs['aggregates_found']).sum())} signals row(s) of {day.isoformat()} have no "
                f"row in {AGGREGATES_TABLE}: re-materialize app_db/user_engagement_signals for this "
                "partition (it writes both in one transaction)."
            )
        milestones = rules.compute_milestones(inputs)
        written = replace_partition_rows(conn, MILESTONES_TABLE, milestones, day, computed_at, users)
    if inputs.empty:
        log.warning(
            f"No signals rows for {day.isoformat()}"
            + (" and these users" if users else "")
            + ": materialize app_db/user_engagement_signals for this partition first."
        )
    with app_db.connect() as conn:
        stats = partition_stats(conn, MILESTONES_TABLE, day)
        without_goal = milestones_without_goal_setting(conn, day)
        only_milestones, only_signals = milestone_users_not_in_signals(conn, day)
    return MilestonesResult(
        day, as_of, users, milestones, written, stats,
        without_goal_setting=without_goal,
        milestones_without_signals=only_milestones,
        signals_without_milestones=only_signals,
    )
