"""Bulk parsing of a Mixpanel raw-export file (JSON lines) into warehouse rows.

Pure data logic (no Dagster, no warehouse): the file is read in large blocks whose lines
become an Arrow string column without a Python object per line; an in-process DuckDB
(one thread, bounded memory) parses each block set-wise with its JSON functions:

* ``event_id``: ``properties.$insert_id``, else ``'h:' || md5(event, distinct_id, time,
  properties)`` (deterministic);
* ``event_timestamp``: ``properties.time`` in seconds or milliseconds (values from
  ``1e11`` on are milliseconds) as a UTC timestamp with microsecond precision;
* ``properties``: the **raw text** of the properties object cut out of the line, so
  unicode escapes, key order, nesting and integers beyond 2^53 are kept exactly; only for
  a line whose shape is not Mixpanel's ``{"event":…,"properties":{…}}`` the object is
  re-serialised by DuckDB (values and big integers are still exact);
* rejected lines (not JSON, not an object, no ``event`` string, no ``properties`` object,
  no usable ``properties.time``) come back with a ``reason``; blank lines are skipped.

Memory is flat in the size of the file: at most one block and one output batch are held.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_platform.common import read_sql, render_sql

BLOCK_BYTES = 16 << 20  # read size; a block is parsed with one DuckDB query
BATCH_ROWS = 200_000  # rows per yielded batch (one warehouse load each)
MS_THRESHOLD = 100_000_000_000  # time >= 1e11 is in milliseconds (1e11 s is year 5138)
MAX_TIME = 100_000_000_000_000  # 1e14 ms is year 5138: anything larger is not a time
MAX_REJECTED_LINE_CHARS = 100_000

REJECT_REASONS = (
    "invalid_json",
    "invalid_utf8",
    "not_an_object",
    "missing_event",
    "missing_properties",
    "missing_time",
    "invalid_time",
)

# Columns of a parsed event batch (the warehouse table adds inserted_at).
PARSED_COLUMNS = (
    "event_id",
    "event_name",
    "distinct_id",
    "event_timestamp",
    "event_date",
    "properties",
    "device_id",
    "os",
    "mp_processing_time_ms",
)

# The parser's SQL (DuckDB dialect, never sent to the warehouse) is in
# sql/mixpanel/duckdb/parse_export_{shape,fast,slow,final}.sql, one file per stage: each
# JSON function runs once per line, and the stages are separate queries because DuckDB
# re-evaluates an expression under CASE for every reference to it.
_SQL = "mixpanel/duckdb/parse_export_"


@dataclass
class ParseStats:
    lines: int = 0  # non-blank lines read
    blank_lines: int = 0
    valid: int = 0
    rejected: int = 0
    rejected_by_reason: dict = field(default_factory=dict)
    duplicates_in_batches: int = 0  # duplicates collapsed inside a batch (first occurrence kept)
    valid_by_day: dict = field(default_factory=dict)  # event_date -> valid lines (before any de-duplication)
    reserialised_properties: int = 0


@dataclass
class ParsedBatch:
    events: pa.Table  # PARSED_COLUMNS + line_no, unique event_id within the batch
    rejected: pa.Table  # line_no, raw_line, reason


def _line_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[memoryview, np.ndarray]]:
    """(data, offsets) per block: ``data`` holds whole lines, ``offsets`` their starts + end.

    Each block is read into a fresh buffer after the previous block's partial last line,
    and ``data`` is a view of it: the 16 MiB are never copied (no ``rest + chunk``, no
    slice), only the partial line is.
    """
    with open(path, "rb", buffering=0) as handle:
        rest = b""
        while True:
            buf = bytearray(len(rest) + block_bytes)
            buf[: len(rest)] = rest
            read = handle.readinto(memoryview(buf)[len(rest) :])
            if not read:
                if not rest:
                    return
                data, rest = memoryview(rest + b"\n"), b""
            else:
                total = len(rest) + read
                cut = buf.rfind(b"\n", 0, total)
                if cut < 0:  # one line longer than the block: keep reading
                    rest = bytes(buf[:total])
                    continue
                rest = bytes(buf[cut + 1 : total])
                data = memoryview(buf)[: cut + 1]
            newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            offsets = np.empty(len(newlines) + 1, dtype=np.int64)
            offsets[0] = 0
            offsets[1:] = newlines + 1
            yield data, offsets


def _block_table(data: memoryview, offsets: np.ndarray, first_line_no: int) -> pa.Table:
    """Arrow table (line_no, line) over ``data`` without copying a line into Python."""
    n = len(offsets) - 1
    lines = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        lines.validate(full=True)  # UTF-8 check of the whole block at C speed
    except pa.ArrowInvalid:
        # Rare: a line is not UTF-8.  Decode line by line; a bad line becomes U+FFFD text
        # that is not valid JSON... unless it happens to be, so mark it explicitly.
        texts = []
        for i in range(n):
            raw = bytes(data[offsets[i] : offsets[i + 1]])
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append("\x00" + raw.decode("utf-8", "replace"))  # NUL: never valid JSON
        lines = pa.array(texts, type=pa.large_string())
    line_no = pa.array(np.arange(first_line_no, first_line_no + n, dtype=np.int64))
    return pa.table({"line_no": line_no, "line": lines})


def _copy_pool() -> pa.MemoryPool:
    """jemalloc when pyarrow has it: the batch copy (_dedup_first) then reuses pages that
    the previous batch freed, where the default pool (mimalloc) hands them back to the
    system and takes a page fault per 4 KiB again (0.5 vs 0.9 CPU-s per 1M events)."""
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.default_memory_pool()


_COPY_POOL = _copy_pool()


def _dedup_first(table: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first row (lowest line_no) per event_id; return (table, rows dropped)."""
    if table.num_rows == 0:
        return table, 0
    firsts = (
        table.select(["event_id", "line_no"])
        .group_by("event_id", use_threads=False)
        .aggregate([("line_no", "min")])
        .column("line_no_min")
        .to_numpy()
    )
    if len(firsts) == table.num_rows:  # no duplicate: nothing to copy
        return table, 0
    # line_no is unique within a batch: a boolean lookup over its range marks the first
    # rows (a hash-based `is_in` over 200k values cost several times more).
    line_no = table.column("line_no").to_numpy()
    low = int(line_no.min())
    is_first = np.zeros(int(line_no.max()) - low + 1, dtype=bool)
    is_first[firsts - low] = True
    kept = pc.filter(table, pa.array(is_first[line_no - low]), memory_pool=_COPY_POOL)
    return kept, table.num_rows - kept.num_rows


class ExportParser:
    """Streams :class:`ParsedBatch` es out of one export file (see module docstring)."""

    def __init__(
        self,
        *,
        batch_rows: int = BATCH_ROWS,
        block_bytes: int = BLOCK_BYTES,
        memory_limit: str = "256MB",
        threads: int = 1,
    ) -> None:
        self.batch_rows = batch_rows
        self.block_bytes = block_bytes
        self.stats = ParseStats()
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone='UTC'")
        self._con.execute(f"SET threads={int(threads)}")
        self._con.execute(f"SET memory_limit='{memory_limit}'")
        # 64-bit hashes of every kept event_id, to count duplicates across batches exactly
        # enough (a collision among 5M ids has probability ~1e-6) in flat, small memory.
        self._con.execute("CREATE TABLE seen_ids (h UBIGINT)")
        # The batch stage (_finish, duplicates_total) has its own connection to the same
        # database: with parse(background=True) it runs while the block stage queries.
        self._ids = self._con.cursor()
        self._active: Optional[Iterator] = None
        final = read_sql(_SQL + "final")
        limits = {"ms_threshold": str(MS_THRESHOLD), "max_time": str(MAX_TIME)}
        self._shape_sql = read_sql(_SQL + "shape")
        self._slow_sql = read_sql(_SQL + "slow")
        self._final_sql = render_sql(final, fragments={"source": "", "extra": "", **limits})
        # the fast path in one query: stage 2a feeding stage 3 (``parsed`` passed through)
        fast = "px AS (" + read_sql(_SQL + "fast") + "), "
        self._fast_final_sql = render_sql(final, fragments={"source": fast, "extra": ", parsed", **limits})

    def duplicates_total(self) -> int:
        """Rows collapsed because their event_id appeared earlier in this export."""
        seen, distinct = self._ids.execute("SELECT count(*), count(DISTINCT h) FROM seen_ids").fetchone()
        return int(self.stats.duplicates_in_batches + seen - distinct)

    def close(self) -> None:
        if self._active is not None:  # a background parse the caller left unfinished
            self._active.close()
            self._active = None
        self._ids.close()
        self._con.close()

    def __enter__(self) -> "ExportParser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sql(self, sql: str, **tables: pa.Table) -> pa.Table:
        for name, table in tables.items():
            self._con.register(name, table)
        try:
            return self._con.sql(sql).to_arrow_table()
        finally:
            for name in tables:
                self._con.unregister(name)

    def _parse_block(self, blk: pa.Table) -> Optional[pa.Table]:
        """One block -> rows of every non-blank line (``reason`` NULL for a good event)."""
        shaped = self._sql(self._shape_sql, blk=blk)
        if not np.array_equal(shaped.column("line_no").to_numpy(), blk.column("line_no").to_numpy()):
            shaped = shaped.sort_by("line_no")  # the positions line up with blk's rows
        fast_ok = shaped.column("fast_ok")
        fast = blk.append_column("ppos", shaped.column("ppos")).append_column("body_len", shaped.column("body_len"))
        if not pc.all(fast_ok).as_py():
            fast = fast.filter(fast_ok)
        parts = []
        slow_mask = pc.invert(fast_ok)
        if fast.num_rows:
            done = self._sql(self._fast_final_sql, fx=fast)
            parsed = done.column("parsed")
            if not pc.all(parsed).as_py():  # X was not valid JSON: the general path decides
                failed = pc.filter(done.column("line_no"), pc.invert(parsed))
                slow_mask = pc.or_(slow_mask, pc.is_in(blk.column("line_no"), value_set=failed))
                done = done.filter(parsed)
            parts.append(done.drop_columns(["parsed"]))
        if pc.any(slow_mask).as_py():
            slow = self._sql(self._slow_sql, sx=blk.filter(slow_mask))
            parts.append(self._sql(self._final_sql, px=slow))
        del shaped, fast
        if not parts:
            return None
        out = pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else parts[0]
        # Lines that stage 3 rejected (event name or time unusable) need their raw text.
        need = pc.and_(pc.is_valid(out.column("reason")), pc.is_null(out.column("raw_line")))
        if pc.any(need).as_py():
            first = blk.column("line_no")[0].as_py()
            index = pc.subtract(out.column("line_no"), first)
            texts = pc.take(blk.column("line"), pc.if_else(need, index, 0))
            texts = pc.utf8_rtrim(texts, characters="\r\n").cast(pa.string())
            raw = pc.if_else(need, texts, out.column("raw_line").cast(pa.string()))
            out = out.set_column(out.schema.get_field_index("raw_line"), "raw_line", raw)
        return out

    def parse(self, path: Path | str, *, background: bool = False) -> Iterator[ParsedBatch]:
        """Yield batches of at most ``batch_rows`` parsed events (plus the rejected lines).

        ``background=True``: the blocks are read and parsed by a background thread one
        batch ahead (:func:`prefetch`), while the calling thread deduplicates the previous
        batch and does whatever it does with it (the warehouse insert): both stages run
        in DuckDB / Arrow, which release the GIL, so they overlap on a second core.  The
        batches, their order and the counts are the same either way."""
        raw = self._raw_batches(Path(path))
        if background:
            raw = prefetch(raw)
            self._active = raw
        try:
            for pending, rejected in raw:
                yield self._finish(pending, rejected)
        finally:
            if background:
                raw.close()  # stops and joins the thread (also when the caller stopped early)
                self._active = None

    def _raw_batches(self, path: Path) -> Iterator[tuple[list[pa.Table], list[pa.Table]]]:
        """(good rows, rejected rows) per batch, not deduplicated yet."""
        if not path.exists() or os.path.getsize(path) == 0:
            return
        line_no = 0
        pending: list[pa.Table] = []
        pending_rows = 0
        rejected: list[pa.Table] = []
        for data, offsets in _line_blocks(path, self.block_bytes):
            blk = _block_table(data, offsets, line_no)
            line_no += blk.num_rows
            out = self._parse_block(blk)
            del blk
            if out is None:
                continue
            reasons = out.column("reason")
            if reasons.null_count == out.num_rows:  # the usual case: no copy
                bad, good = out.slice(0, 0), out
            else:
                is_rejected = pc.is_valid(reasons)
                bad = out.filter(is_rejected)
                good = out.filter(pc.invert(is_rejected))
            self.stats.lines += bad.num_rows + good.num_rows
            if bad.num_rows:
                rejected.append(bad.select(["line_no", "raw_line", "reason"]))
                for reason in bad.column("reason").to_pylist():
                    self.stats.rejected_by_reason[reason] = self.stats.rejected_by_reason.get(reason, 0) + 1
                self.stats.rejected += bad.num_rows
            if good.num_rows:
                pending.append(good)
                pending_rows += good.num_rows
            if pending_rows >= self.batch_rows:
                yield pending, rejected
                pending, rejected, pending_rows = [], [], 0
        self.stats.blank_lines = line_no - self.stats.lines
        if pending or rejected:
            yield pending, rejected

    def _finish(self, pending: list[pa.Table], rejected: list[pa.Table]) -> ParsedBatch:
        if pending:
            table = pa.concat_tables(pending)
            self.stats.valid += table.num_rows
            for item in pc.value_counts(table.column("event_date")).to_pylist():
                day = item["values"]
                self.stats.valid_by_day[day] = self.stats.valid_by_day.get(day, 0) + item["counts"]
            self.stats.reserialised_properties += pc.sum(table.column("reserialised")).as_py() or 0
            table, dropped = _dedup_first(table)
            self.stats.duplicates_in_batches += dropped
            events = table.select(["line_no", *PARSED_COLUMNS])
            self._ids.register("kept", events.select(["event_id"]))
            try:
                self._ids.execute("INSERT INTO seen_ids SELECT hash(event_id) FROM kept")
            finally:
                self._ids.unregister("kept")
        else:
            events = _empty_events()
        rej = pa.concat_tables(rejected) if rejected else _empty_rejected()
        if rej.num_rows:
            raw = pc.utf8_slice_codeunits(rej.column("raw_line"), 0, MAX_REJECTED_LINE_CHARS)
            rej = rej.set_column(rej.schema.get_field_index("raw_line"), "raw_line", raw)
        return ParsedBatch(events=events, rejected=rej)


T = TypeVar("T")


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items`` produced by a background thread, at most ``depth`` ahead of the consumer.

    The export parser and the warehouse insert both run in DuckDB, which releases the GIL:
    with the parser one batch ahead, batch N+1 is parsed while batch N is inserted (the
    two stages overlap on a second core).  The producer starts an item only when the
    consumer has taken the one before (``depth`` = 1): memory grows by one batch, not with
    the file.  An exception of the producer is raised in the consumer; when the consumer
    stops early (its own exception), the producer stops before its next item and is
    joined here, so the caller may close what the producer uses right after.
    """
    q: "queue.Queue[tuple[int, object]]" = queue.Queue()
    ahead = threading.Semaphore(max(1, depth))  # items started and not yet taken
    stop = threading.Event()
    item_, end_, error_ = 0, 1, 2

    def work() -> None:
        try:
            source = iter(items)
            while True:
                while not ahead.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(source)
                except StopIteration:
                    q.put((end_, None))
                    return
                q.put((item_, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((error_, exc))

    thread = threading.Thread(target=work, name="mixpanel-export-parse", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == item_:
                ahead.release()  # the producer starts the next item while this one is used
                yield value  # type: ignore[misc]
            elif kind == end_:
                return
            else:
                raise value  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _empty_events() -> pa.Table:
    return pa.table(
        {
            "line_no": pa.array([], pa.int64()),
            "event_id": pa.array([], pa.string()),
            "event_name": pa.array([], pa.string()),
            "distinct_id": pa.array([], pa.string()),
            "event_timestamp": pa.array([], pa.timestamp("us")),
            "event_date": pa.array([], pa.date32()),
            "properties": pa.array([], pa.string()),
            "device_id": pa.array([], pa.string()),
            "os": pa.array([], pa.string()),
            "mp_processing_time_ms": pa.array([], pa.int64()),
        }
    )


def _empty_rejected() -> pa.Table:
    return pa.table(
        {
            "line_no": pa.array([], pa.int64()),
            "raw_line": pa.array([], pa.string()),
            "reason": pa.array([], pa.string()),
        }
    )
