"""I/O of the engagement domain and each asset's work (:func:`extract_events`,
:func:`ensure_mirror_current`, :func:`write_signals_partition`,
:func:`write_milestones_partition`), returning result dataclasses with ``.metadata()``.

Where things live (design.md: push compute to the warehouse, PostgreSQL receives results):

* the **warehouse** (``Warehouse``: BigQuery in prod, DuckDB locally; dataset
  ``ENGAGEMENT_DATASET``, :mod:`.tables`): the mirror of the Firestore event documents, its
  quarantine and cursor, and the per-user aggregates (BigQuery-dialect SQL in
  ``sql/engagement/*.sql``);
* the **application PostgreSQL**: the goal tables (read per run, small) and the results
  ``user_engagement_signals`` / ``user_milestones`` (tables created by
  ``analytics_platform.migrations``; Postgres SQL in ``sql/engagement/postgres/``).

The PostgreSQL functions take an open SQLAlchemy ``Connection`` inside the caller's
transaction (``with app_db.begin() as conn``), so the caller decides what is atomic.
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

from analytics_platform import migrations
from analytics_platform.common import UTC, read_postgres_sql, render_sql, utc_now
from analytics_platform.engagement import rules, tables
from analytics_platform.engagement.rules import (
    AGGREGATE_COLUMNS,
    MILESTONE_COLUMNS,
    SIGNAL_COLUMNS,
    SplitDocuments,
    split_documents,
    week_boundaries,
)
from analytics_platform.engagement.tables import (
    AGGREGATES_TABLE,
    CURSORS_TABLE,
    EVENTS_TABLE,
    GOALS_BATCH_SCHEMA,
    REJECTS_TABLE,
)
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.firestore import EventCursor, FirestoreService, UntimedCounts
from analytics_platform.resources.warehouse import Param, Warehouse

SIGNALS_TABLE = "user_engagement_signals"
MILESTONES_TABLE = "user_milestones"
GOAL_TABLES = ("goal_sub_categories", "goals", "user_goals", "apps", "app_goal_sub_categories")

DEFAULT_REREAD_WINDOW_HOURS = 72
DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS = 30.0
# Firestore pages are buffered and written to the warehouse (then the cursor) every this
# many documents: few, large DML statements (BigQuery) rather than one per page.
DEFAULT_FLUSH_DOCUMENTS = 50_000

# table -> its columns in order (what COPY writes)
_OUTPUT_COLUMNS = {
    SIGNALS_TABLE: (*SIGNAL_COLUMNS[:1], "as_of_date", *SIGNAL_COLUMNS[1:], "computed_at"),
    MILESTONES_TABLE: (*MILESTONE_COLUMNS[:1], "as_of_date", *MILESTONE_COLUMNS[1:], "computed_at"),
}


def sql(name: str) -> str:
    """``read_postgres_sql("engagement/postgres/<name>")``: the statement without its
    comments (a ``:user_ids`` named in a comment would be bound there too)."""
    return read_postgres_sql(f"engagement/postgres/{name}")


class MissingInputs(RuntimeError):
    """An input of the asset is missing; retrying will not help (the message says what to do)."""


class FirestoreUnavailable(RuntimeError):
    """Firestore (or its local export) could not be read: nothing was computed or written."""


class IncompleteMirror(RuntimeError):
    """The mirror does not hold every event before T (so no numbers are computed)."""


def ensure_goal_tables(conn: sa.Connection) -> None:
    """Create the application's goal tables when absent: local demo and tests only."""
    conn.exec_driver_sql(sql("goal_tables"))


def missing_goal_tables(conn: sa.Connection) -> list[str]:
    return [
        name
        for name in GOAL_TABLES
        if not conn.execute(sa.text(sql("check_table_exists")), {"n": f"public.{name}"}).scalar()
    ]


def _dbapi_cursor(conn: sa.Connection):
    return conn.connection.dbapi_connection.cursor()


# ---------------------------------------------------------------------------- parameters
def user_params(as_of_date: dt.date, user_ids: Optional[Sequence[str]]) -> dict[str, Any]:
    """Warehouse parameters selecting a partition's users (all, or ``user_ids``)."""
    return {
        "as_of_date": as_of_date,
        "all_users": user_ids is None,
        "user_ids": Param(list(user_ids or []), "STRING"),
    }


def aggregation_params(
    as_of: dt.datetime, as_of_date: dt.date, computed_at: dt.datetime, user_ids: Optional[Sequence[str]]
) -> dict[str, Any]:
    """Parameters of ``sql/engagement/user_aggregates.sql``."""
    return {"as_of": as_of, "computed_at": computed_at, **week_boundaries(as_of), **user_params(as_of_date, user_ids)}


def paths_param(paths: Sequence[str]) -> dict[str, Any]:
    return {"paths": Param(list(paths), "STRING")}


def source_param(source: str) -> dict[str, Any]:
    return {"source": source}


# ---------------------------------------------------------------------------- the mirror (warehouse)
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


@dataclass
class StoredCursor:
    cursor: Optional[EventCursor]
    complete_until: Optional[dt.datetime]
    documents_read_total: int


def _utc(value: Any) -> Optional[dt.datetime]:
    if value is None or (not isinstance(value, dt.datetime) and pd.isna(value)):
        return None
    return pd.Timestamp(value).tz_convert(UTC).to_pydatetime() if pd.Timestamp(value).tzinfo else (
        pd.Timestamp(value).tz_localize(UTC).to_pydatetime()
    )


_EVENT_VALUE_COLUMNS = ("user_id", "event_id", "app_id", "foreground_time_ms", "session_id", "event_timestamp")


@dataclass
class Mirror:
    """The Firestore mirror in the warehouse (``dataset``): events, rejects, cursor."""

    warehouse: Warehouse
    dataset: str

    def ensure(self) -> None:
        tables.ensure_tables(self.warehouse, self.dataset)

    def read_cursor(self, source: str) -> StoredCursor:
        rows = self.warehouse.run_file("engagement/select_cursor", source_param(source), dataset=self.dataset)
        if rows.empty:
            return StoredCursor(None, None, 0)
        row = rows.iloc[0]
        ts, path = _utc(row["cursor_timestamp"]), row["cursor_document_path"]
        cursor = EventCursor(ts, path) if ts is not None and isinstance(path, str) and path else None
        return StoredCursor(cursor, _utc(row["complete_until"]), int(row["documents_read_total"] or 0))

    def write_cursor(self, source: str, stored: StoredCursor, now: dt.datetime) -> None:
        """Upsert the source's row (after the data it describes: a crash in between only
        makes the next run re-read, and upserts make that harmless)."""
        frame = pd.DataFrame([{
            "source": source,
            "cursor_timestamp": stored.cursor.timestamp if stored.cursor else None,
            "cursor_document_path": stored.cursor.path if stored.cursor else None,
            "documents_read_total": stored.documents_read_total,
            "updated_at": now,
            "complete_until": stored.complete_until,
        }])
        self.warehouse.load(frame, self.dataset, CURSORS_TABLE, tables.CURSORS_SCHEMA, "merge", key_columns=("source",))

    def count(self, table: str) -> int:
        if table not in (EVENTS_TABLE, REJECTS_TABLE, AGGREGATES_TABLE):
            raise ValueError(f"unknown table {table}")
        return int(self.warehouse.run_file("engagement/table_row_count", dataset=self.dataset, table=table)["n"].iloc[0])

    def write_batch(self, split: SplitDocuments, now: dt.datetime) -> PageCounts:
        """Upsert a batch's valid events and rejects by document path (a row is rewritten
        only when something changed); a document that changed validity moves tables."""
        counts = PageCounts(rejected=len(split.rejects))
        valid = list({row["document_path"]: row for row in split.valid}.values())  # one row per path
        rejects = list({row["document_path"]: row for row in split.rejects}.values())
        paths = [r["document_path"] for r in valid] + [r["document_path"] for r in rejects]
        if not paths:
            return counts
        existing = self.warehouse.run_file("engagement/existing_events", paths_param(paths), dataset=self.dataset)
        stored = {
            r["document_path"]: (r["user_id"], r["event_id"], r["app_id"], int(r["foreground_time_ms"]),
                                 r["session_id"], _utc(r["event_timestamp"]))
            for r in existing.to_dict("records")
        }
        changed = []
        for row in valid:
            value = tuple(row[c] for c in _EVENT_VALUE_COLUMNS[:-1]) + (_utc(row["event_timestamp"]),)
            old = stored.get(row["document_path"])
            if old is None:
                counts.inserted += 1
            elif old != value:
                counts.updated += 1
            else:
                counts.unchanged += 1
                continue
            changed.append({**row, "event_date": row["event_timestamp"].astimezone(UTC).date(), "extracted_at": now})
        if changed:
            self.warehouse.load(
                pd.DataFrame(changed), self.dataset, EVENTS_TABLE, tables.EVENTS_SCHEMA, "merge",
                key_columns=("document_path",),
            )
        invalid_now = [r["document_path"] for r in rejects if r["document_path"] in stored]
        if invalid_now:
            self.warehouse.execute_file("engagement/delete_events_by_path", paths_param(invalid_now), dataset=self.dataset)
        if valid:
            quarantined = self.warehouse.run_file(
                "engagement/existing_rejects", paths_param([r["document_path"] for r in valid]), dataset=self.dataset
            )
            if not quarantined.empty:
                self.warehouse.execute_file(
                    "engagement/delete_rejects_by_path", paths_param(quarantined["document_path"].tolist()),
                    dataset=self.dataset,
                )
        if rejects:
            frame = pd.DataFrame(rejects)
            frame["first_seen_at"] = now
            frame["last_seen_at"] = now
            self.warehouse.load(
                frame, self.dataset, REJECTS_TABLE, tables.REJECTS_SCHEMA, "merge",
                key_columns=("document_path",), preserve_on_update=("first_seen_at",),
            )
        return counts


# ---------------------------------------------------------------------------- PostgreSQL reads
_BIND = re.compile(r"(?<![:\w]):(\w+)")


def copy_out_arrow(
    conn: sa.Connection, statement: str, params: dict, column_types: Optional[dict] = None
) -> pa.Table:
    """Run a SELECT through ``COPY (...) TO STDOUT`` and parse the CSV with Arrow (much faster
    than row-by-row fetching for 100k+ rows). ``:name`` parameters are bound client-side by
    psycopg2 (quoted, never formatted in)."""
    cur = _dbapi_cursor(conn)
    try:
        bound = cur.mogrify(_BIND.sub(r"%(\1)s", statement.replace("%", "%%")), params).decode()
        buffer = io.BytesIO()
        cur.copy_expert(f"COPY (\n{bound}\n) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer)
    finally:
        cur.close()
    buffer.seek(0)
    return pa_csv.read_csv(
        buffer,
        convert_options=pa_csv.ConvertOptions(
            true_values=["t"], false_values=["f"], column_types=column_types or {}, strings_can_be_null=False,
        ),
    )


def copy_out(conn: sa.Connection, statement: str, params: dict, string_columns: Sequence[str] = ("user_id",)) -> pd.DataFrame:
    """:func:`copy_out_arrow` as a DataFrame (``string_columns`` read as text)."""
    return copy_out_arrow(conn, statement, params, {c: pa.string() for c in string_columns}).to_pandas()


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
    conn.execute(sa.text(sql("lock_partition")), {"key": f"analytics_platform:{table}:{as_of_date.isoformat()}"})
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
    """What one run of ``engagement/firestore_app_usage_events`` (or the read inside a signals run) read and wrote."""

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
    mirror: Mirror,
    firestore: FirestoreService,
    *,
    full_refresh: bool,
    page_size: int,
    max_documents: Optional[int],
    reread_window_hours: float = DEFAULT_REREAD_WINDOW_HOURS,
    count_untimed: bool = True,
    untimed_count_timeout: float = DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS,
    flush_documents: int = DEFAULT_FLUSH_DOCUMENTS,
    log: logging.Logger,
) -> ExtractionResult:
    """Read the Firestore event documents from ``reread_window_hours`` before the stored
    cursor (late uploads with an older ``timestamp``; all of them with ``full_refresh``) up
    to now, page by page, into the warehouse mirror: every ``flush_documents`` documents (and
    at the end) the buffered events and rejects are upserted, then the cursor is stored. A
    read that fetched every page up to now records ``complete_until`` = now: the mirror then
    holds every document with a timestamp before it (late uploads aside).

    Firestore failures raise :class:`FirestoreUnavailable` (naming the cause) after the
    client's own retries; batches written before stay (the next run continues)."""
    now = utc_now()
    mirror.ensure()
    stored = mirror.read_cursor(firestore.source_name)
    after = None if full_refresh else stored.cursor
    since = None
    if after is not None and reread_window_hours > 0:
        since = after.timestamp - dt.timedelta(hours=reread_window_hours)
        after = None
    log.info(
        f"Reading {firestore.describe()} into the warehouse mirror ({mirror.warehouse.engine} {mirror.dataset}) "
        + (f"after {stored.cursor.timestamp.isoformat()}" if after else ("from " + since.isoformat() if since else "from the start"))
    )

    result = ExtractionResult(source=firestore.describe(), full_refresh=full_refresh, totals=PageCounts(), cursor=stored.cursor)
    buffer = SplitDocuments()
    buffered = 0

    def flush(position: Optional[EventCursor]) -> None:
        nonlocal buffer, buffered
        if buffered == 0:
            return
        result.totals.add(mirror.write_batch(buffer, now))
        if position is not None and (stored.cursor is None or position.key() > stored.cursor.key()):
            stored.cursor = position  # never moves back, in Firestore's order
        stored.documents_read_total += buffered
        mirror.write_cursor(firestore.source_name, stored, now)
        result.cursor = stored.cursor
        buffer, buffered = SplitDocuments(), 0

    position = None
    try:
        for page in firestore.iter_event_pages(
            after, since=since, until=now, page_size=page_size, max_documents=max_documents
        ):
            split = split_documents(page.documents, firestore.root_collection, firestore.events_subcollection)
            buffer.valid.extend(split.valid)
            buffer.rejects.extend(split.rejects)
            buffered += len(page.documents)
            position = page.cursor
            result.documents_read += len(page.documents)
            result.out_of_scope += split.out_of_scope
            result.pages += 1
            for reject in split.rejects[:5]:
                log.warning(f"Rejected {reject['document_path']}: {reject['reasons']}")
            if buffered >= flush_documents:
                flush(position)
    except FirestoreUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any read failure: name it
        flush(position)  # what was read is valid: keep it (the cursor follows it)
        raise FirestoreUnavailable(
            f"Reading {firestore.describe()} failed ({type(exc).__name__}: {str(exc)[:300]}); "
            f"{result.documents_read} document(s) were read and kept before the failure, "
            "the mirror is incomplete and no signals were computed."
        ) from exc
    flush(position)
    if max_documents is None or result.documents_read < max_documents:
        stored.complete_until = max(stored.complete_until or now, now)
        mirror.write_cursor(firestore.source_name, stored, now)
        result.complete_until = now

    if count_untimed:
        _count_untimed(firestore, now, untimed_count_timeout, result, log)
    result.total_rows = mirror.count(EVENTS_TABLE)
    result.rejects_total = mirror.count(REJECTS_TABLE)
    if result.totals.rejected:
        log.warning(
            f"{result.totals.rejected} document(s) with a missing or ill-typed field were skipped and "
            f"quarantined in {mirror.dataset}.{REJECTS_TABLE}."
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

    Not when the last complete read ended at or after ``as_of + reread_window`` (late uploads
    for T are assumed to arrive within the window: a backfill of old days reads nothing),
    nor when it ended less than ``max_age`` ago (the partitions of one daily tick share one
    read); otherwise yes (also on a fresh instance: nothing was read yet)."""
    if complete_until is None:
        return True
    if complete_until >= as_of + reread_window:
        return False
    return complete_until < now - max_age


def ensure_mirror_current(
    mirror: Mirror,
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
    mirror.ensure()
    before = mirror.read_cursor(firestore.source_name).complete_until
    window = dt.timedelta(hours=reread_window_hours)
    if not mirror_needs_sync(before, as_of, now, window, dt.timedelta(minutes=max_age_minutes)):
        log.info(f"Mirror current: complete until {before.isoformat()}, no Firestore read needed for {as_of.isoformat()}")
        return MirrorSync(as_of, before, None)
    extraction = extract_events(
        mirror, firestore, full_refresh=False, page_size=1000, max_documents=None,
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


def read_goal_batch(conn: sa.Connection, user_ids: Optional[Sequence[str]]) -> pa.Table:
    """The goal tables of a run as the aggregation's batch (tables.GOALS_BATCH_SCHEMA):
    every service app with its sub-categories, and the (requested) users' goals."""
    return copy_out_arrow(
        conn, sql("goal_batch"), _pg_user_params(user_ids),
        column_types={"kind": pa.string(), "key": pa.string(), "sub_category_id": pa.int64(), "tier": pa.int64()},
    )


def _pg_user_params(user_ids: Optional[Sequence[str]]) -> dict:
    if user_ids is None:
        return {"all_users": True, "user_ids": []}
    return {"all_users": False, "user_ids": list(user_ids)}


def compute_aggregates(
    mirror: Mirror, goals: pa.Table, as_of: dt.datetime, day: dt.date, computed_at: dt.datetime,
    user_ids: Optional[Sequence[str]],
) -> pd.DataFrame:
    """Replace the partition's aggregates in the warehouse (only ``user_ids``' when given)
    by those as of ``as_of`` (one set-based statement over the mirror and the goal batch)
    and return them (rules.AGGREGATE_COLUMNS). The DELETE and the INSERT are two statements:
    a failure in between leaves the partition's aggregates short, and the signals are not
    written (the next run replaces both)."""
    mirror.ensure()
    mirror.warehouse.execute_file("engagement/delete_aggregates", user_params(day, user_ids), dataset=mirror.dataset)
    mirror.warehouse.insert_from_batch(
        "engagement/user_aggregates", goals, GOALS_BATCH_SCHEMA,
        aggregation_params(as_of, day, computed_at, user_ids),
        batch_dataset=mirror.dataset, dataset=mirror.dataset,
    )
    return read_aggregates(mirror, day, user_ids)


def read_aggregates(mirror: Mirror, day: dt.date, user_ids: Optional[Sequence[str]]) -> pd.DataFrame:
    frame = mirror.warehouse.run_file("engagement/select_aggregates", user_params(day, user_ids), dataset=mirror.dataset)
    return frame[list(AGGREGATE_COLUMNS)]


def write_signals_partition(
    app_db: AppDatabase, mirror: Mirror, day: dt.date, users: Optional[list[str]], log: logging.Logger
) -> SignalsResult:
    """Aggregate in the warehouse (goal tables read from PostgreSQL for the run), evaluate
    the signal rules, and replace the partition's rows of ``user_engagement_signals`` (only
    ``users``' when given) in one PostgreSQL transaction."""
    as_of = rules.as_of_for_day(day)
    with app_db.connect() as conn:
        migrations.require_current(conn)
        missing = missing_goal_tables(conn)
        if missing:
            raise MissingInputs(
                f"The application database lacks the goal tables {', '.join(missing)}. They belong to "
                "the application (check APP_DATABASE_URL); locally, seed them with "
                "`python -m analytics_platform.demo --domain engagement`."
            )
        goals = read_goal_batch(conn, users)
    computed_at = utc_now()
    aggregates = compute_aggregates(mirror, goals, as_of, day, computed_at, users)
    signals = rules.compute_signals(aggregates)
    with app_db.begin() as conn:
        written = replace_partition_rows(conn, SIGNALS_TABLE, signals, day, computed_at, users)
    with app_db.connect() as conn:
        stats = partition_stats(conn, SIGNALS_TABLE, day)
    log.info(
        f"Signals as of {as_of.isoformat()}: {len(signals)} user(s) evaluated"
        + (f" of {len(users)} requested" if users else "")
    )
    return SignalsResult(day, as_of, users, signals, written, stats)


def load_milestone_inputs(
    app_db: AppDatabase, mirror: Mirror, day: dt.date, user_ids: Optional[Sequence[str]]
) -> pd.DataFrame:
    """Stored signals of ``day`` (PostgreSQL) plus the tier flags of the aggregates written
    with them (warehouse): rules.MILESTONE_INPUT_COLUMNS and ``aggregates_found``."""
    with app_db.connect() as conn:
        migrations.require_current(conn)
        signals = copy_out(conn, sql("select_partition_signals"), {"as_of_date": day, **_pg_user_params(user_ids)})
    mirror.ensure()
    tiers = read_aggregates(mirror, day, user_ids)[["user_id", "has_tier1_event", "has_tier2_event"]]
    inputs = signals.merge(tiers, on="user_id", how="left", indicator=True)
    inputs["aggregates_found"] = inputs.pop("_merge").eq("both").to_numpy()
    for flag in ("has_tier1_event", "has_tier2_event"):
        inputs[flag] = inputs[flag].fillna(False).astype(bool)
    return inputs


def write_milestones_partition(
    app_db: AppDatabase, mirror: Mirror, day: dt.date, users: Optional[list[str]], log: logging.Logger
) -> MilestonesResult:
    """Evaluate the milestone rules on the partition's stored signals and replace the
    partition's rows of ``user_milestones`` (only ``users``' when given), in one transaction."""
    as_of = rules.as_of_for_day(day)
    computed_at = utc_now()
    inputs = load_milestone_inputs(app_db, mirror, day, users)
    if not inputs.empty and not inputs["aggregates_found"].all():
        raise MissingInputs(
            f"{int((~inputs['aggregates_found']).sum())} signals row(s) of {day.isoformat()} have no "
            f"row in the warehouse's {mirror.dataset}.{AGGREGATES_TABLE}: re-materialize "
            "app_db/user_engagement_signals for this partition (it writes both)."
        )
    milestones = rules.compute_milestones(inputs)
    with app_db.begin() as conn:
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
