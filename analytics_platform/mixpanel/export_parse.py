"""Bulk parsing of a Mixpanel raw-export file (JSON lines) into warehouse rows.

Pure data logic (no Dagster, no warehouse): the file is read in large blocks whose lines
become an Arrow string column without a Python object per line.  Lines of Mixpanel's own
shape ``{"event":<S>,"properties":<X>}`` are found with vectorised byte tests (numpy,
pyarrow) and S and X become *string views* into the block (nothing is copied); an
in-process DuckDB (one thread, bounded memory) parses S and X once each with its JSON
functions, every other line goes through a general path (also DuckDB):

* ``event_id``: ``properties.$insert_id``, else ``'h:' || md5(event, distinct_id, time,
  properties)`` (deterministic);
* ``event_timestamp``: ``properties.time`` in seconds or milliseconds (values from
  ``1e11`` on are milliseconds) as a UTC timestamp with microsecond precision;
* ``properties``: the **raw text** of the properties object (string views into the block,
  typed as Arrow's JSON extension: text known to be valid JSON), so
  unicode escapes, key order, nesting and integers beyond 2^53 are kept exactly; only for
  a line whose shape is not Mixpanel's ``{"event":…,"properties":{…}}`` the object is
  re-serialised by DuckDB (values and big integers are still exact);
* rejected lines (not JSON, not an object, no ``event`` string, no ``properties`` object,
  no usable ``properties.time``) come back with a ``reason``; blank lines are skipped.

Duplicates of an ``event_id`` inside a batch are told apart by DuckDB's 64-bit hash and
confirmed by comparing the ids (the first line is kept).  Memory is flat in the size of
the file: a batch holds the blocks its views point into (about 110 MB per 200k events),
and at most ``ahead`` + 1 batches are alive (parsed ahead, and the one being loaded).
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
from analytics_platform.resources.growing_file import GrowingFile

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
# sql/mixpanel/duckdb/parse_export_{fast,slow,final}.sql, one file per stage: each JSON
# function runs once per line, and the general path is a separate query because DuckDB
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
    # line_no + PARSED_COLUMNS + seen_earlier_in_export (the id's hash was kept from an
    # earlier batch of this export); unique event_id within the batch
    events: pa.Table
    rejected: pa.Table  # line_no, raw_line, reason


def _line_blocks(source: Path | GrowingFile, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[memoryview, np.ndarray]]:
    """(data, offsets) per block: ``data`` holds whole lines, ``offsets`` their starts + end.

    Each block is read into a fresh buffer after the previous block's partial last line,
    and ``data`` is a view of it: the 16 MiB are never copied (no ``rest + chunk``, no
    slice), only the partial line is.  ``source``: a complete file, or a file still being
    written (read as it grows; see resources/growing_file.py).
    """
    opened = source.reader() if isinstance(source, GrowingFile) else open(source, "rb", buffering=0)
    with opened as handle:
        rest = b""
        while True:
            buf = bytearray(len(rest) + block_bytes)
            buf[: len(rest)] = rest
            free = memoryview(buf)[len(rest) :]
            read = 0
            while read < len(free):  # a whole block (a growing file comes in pieces)
                got = handle.readinto(free[read:])
                if not got:
                    break
                read += got
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


def _block_table(data: memoryview, offsets: np.ndarray, first_line_no: int) -> tuple[pa.Table, Optional[np.ndarray]]:
    """Arrow table (line_no, line) over ``data`` without copying a line into Python, and
    the mask of lines that are not UTF-8 (None: every line is)."""
    n = len(offsets) - 1
    lines = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    bad_utf8 = None
    try:
        lines.validate(full=True)  # UTF-8 check of the whole block at C speed
    except pa.ArrowInvalid:
        # Rare: a line is not UTF-8.  Decode line by line; a bad line becomes U+FFFD text
        # that is not valid JSON... unless it happens to be, so mark it explicitly.
        texts = []
        bad_utf8 = np.zeros(n, dtype=bool)
        for i in range(n):
            raw = bytes(data[offsets[i] : offsets[i + 1]])
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append("\x00" + raw.decode("utf-8", "replace"))  # NUL: never valid JSON
                bad_utf8[i] = True
        lines = pa.array(texts, type=pa.large_string())
    line_no = pa.array(np.arange(first_line_no, first_line_no + n, dtype=np.int64))
    return pa.table({"line_no": line_no, "line": lines}), bad_utf8


_EVENT_PREFIX = np.frombuffer(b'{"event":"', dtype=np.uint8)
_PROPERTIES_KEY = '"properties":'
_TEXT_VIEW = pa.string_view()
# The properties column of a parsed batch: JSON text (Arrow's canonical JSON extension)
# over string views into the export's blocks: the ~500 bytes of a line's properties are
# never copied between the file and the warehouse insert, and a warehouse that knows the
# type (DuckDB: JSON) does not validate the text again.
PROPERTIES_TYPE = pa.json_(_TEXT_VIEW)


def _string_views(buffer: pa.Buffer, starts: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """``string_view`` array of ``buffer[starts[i] : starts[i] + lengths[i]]`` (no copy of
    the bytes: 16-byte views into ``buffer``; a string of at most 12 bytes is inlined)."""
    n = len(starts)
    views = np.zeros((n, 4), dtype=np.int32)
    views[:, 0] = lengths
    raw = np.frombuffer(buffer, dtype=np.uint8)
    last = len(raw) - 1
    as_bytes = views.view(np.uint8).reshape(n, 16)
    long = lengths > 12
    if long.any():
        starts_long = starts[long]
        as_bytes[long, 4:8] = raw[np.minimum(starts_long[:, None] + np.arange(4), last)]
        views[long, 3] = starts_long  # buffer index 0, offset
    short = ~long
    if short.any():
        gathered = raw[np.minimum(starts[short][:, None] + np.arange(12), last)]
        inside = np.arange(12)[None, :] < lengths[short][:, None]
        as_bytes[short, 4:16] = np.where(inside, gathered, 0)
    return pa.Array.from_buffers(_TEXT_VIEW, n, [None, pa.py_buffer(views), buffer])


def _take_views(array: pa.Array, rows: np.ndarray) -> pa.Array:
    """``array.take(rows)`` for a ``string_view`` array (or an extension over one), which
    pyarrow's take/filter kernels do not cover: the 16-byte views are gathered, the text
    buffers are shared."""
    ext = array.type if isinstance(array.type, pa.BaseExtensionType) else None
    storage = array.storage if ext is not None else array
    buffers = storage.buffers()
    views = np.frombuffer(buffers[1], dtype=np.int32).reshape(-1, 4)[storage.offset : storage.offset + len(storage)]
    validity = None
    if storage.null_count:
        valid = np.asarray(storage.is_valid())[rows]
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    taken = pa.Array.from_buffers(_TEXT_VIEW, len(rows), [validity, pa.py_buffer(np.ascontiguousarray(views[rows])), *buffers[2:]])
    return pa.ExtensionArray.from_storage(ext, taken) if ext is not None else taken


def _is_view(type_: pa.DataType) -> bool:
    return pa.types.is_string_view(type_.storage_type if isinstance(type_, pa.BaseExtensionType) else type_)


def filter_rows(table: pa.Table, mask: np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table.filter(mask)`` that also handles string-view columns (see _take_views)."""
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        mask = mask.to_numpy(zero_copy_only=False)
    keep = np.asarray(mask, dtype=bool)
    if keep.all():
        return table  # nothing to drop: no copy
    views = [f.name for f in table.schema if _is_view(f.type)]
    if not views:
        return table.filter(pa.array(keep))
    rest = table.drop_columns(views).filter(pa.array(keep))
    columns = []
    for field in table.schema:
        if field.name not in views:
            columns.append(rest.column(field.name))
            continue
        chunks, start = [], 0
        for chunk in table.column(field.name).chunks:
            rows = np.flatnonzero(keep[start : start + len(chunk)])
            start += len(chunk)
            if len(rows):
                chunks.append(_take_views(chunk, rows))
        columns.append(pa.chunked_array(chunks, type=field.type))
    return pa.Table.from_arrays(columns, schema=table.schema)


def _fast_lines(raw: np.ndarray, offsets: np.ndarray, ppos: np.ndarray, bad_utf8: Optional[np.ndarray]):
    """Which lines have Mixpanel's own shape ``{"event":<S>,"properties":<X>}``, and where
    S and X are in the block (byte positions).

    ``ppos``: byte position of the first ``"properties":`` in each line (-1: none).  It is
    that key when the text before it is ``{"event":"…",``: the pattern cannot occur inside
    a JSON string (its quotes would be escaped).  S and X are then checked by a JSON parser
    (DuckDB, stage 2a): a line whose S is not one JSON string or whose X is not one JSON
    object goes to the general path.  Returns (mask, S start, S length, X start, X length)."""
    starts = offsets[:-1]
    ends = offsets[1:] - 1  # the newline
    last = len(raw) - 1
    body_end = ends.copy()
    has_cr = (body_end > starts) & (raw[np.maximum(body_end - 1, 0)] == 13)
    body_end -= has_cr
    length = body_end - starts
    ok = (length >= 10 + 2 + 13 + 2 + 1) & (ppos >= 11)
    ok &= (raw[np.minimum(starts[:, None] + np.arange(10), last)] == _EVENT_PREFIX).all(axis=1)
    key = starts + ppos
    ok &= raw[np.clip(key - 1, 0, last)] == ord(",")
    ok &= raw[np.clip(key - 2, 0, last)] == ord('"')
    x_start = key + len(_PROPERTIES_KEY)
    x_end = body_end - 1  # the line's closing brace
    ok &= x_end - x_start >= 2
    ok &= raw[np.clip(body_end - 1, 0, last)] == ord("}")
    ok &= raw[np.clip(x_start, 0, last)] == ord("{")
    ok &= raw[np.clip(x_end - 1, 0, last)] == ord("}")
    if bad_utf8 is not None:
        ok &= ~bad_utf8
    s_start = starts + 9
    return ok, s_start, key - 1 - s_start, x_start, x_end - x_start


def _first_occurrences(event_id: pa.ChunkedArray, id_hash: np.ndarray, line_no: np.ndarray) -> Optional[np.ndarray]:
    """Mask of the rows to keep: the first row (lowest line_no) per event_id; None when
    every event_id is unique.  Rows are told apart by their 64-bit hash (numpy, no string
    hashing in Python); only the rows of a repeated hash are compared by their text, so a
    hash collision never merges two different ids."""
    hashes, counts = np.unique(id_hash, return_counts=True)
    if len(hashes) == len(id_hash):
        return None
    repeated = hashes[counts > 1]
    rows = np.flatnonzero(np.isin(id_hash, repeated))
    rows = rows[np.argsort(line_no[rows], kind="stable")]
    ids = event_id.take(pa.array(rows)).to_pylist()
    keep = np.ones(len(id_hash), dtype=bool)
    seen: set = set()
    for row, value in zip(rows.tolist(), ids):
        if value in seen:
            keep[row] = False
        else:
            seen.add(value)
    return keep


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
        self._active: Optional[Prefetch] = None
        self._growing: Optional[GrowingFile] = None
        self._closed = False
        final = read_sql(_SQL + "final")
        limits = {"ms_threshold": str(MS_THRESHOLD), "max_time": str(MAX_TIME)}
        self._slow_sql = read_sql(_SQL + "slow")
        self._final_sql = render_sql(
            final, fragments={"source": "", "extra": "", "properties": "properties, ", **limits}
        )
        # the fast path in one query: stage 2a feeding stage 3 (``parsed`` passed through;
        # the properties stay the caller's views of X, not copied out of DuckDB)
        fast = "px AS (" + read_sql(_SQL + "fast") + "), "
        self._fast_final_sql = render_sql(
            final, fragments={"source": fast, "extra": ", parsed", "properties": "", **limits}
        )

    def duplicates_total(self) -> int:
        """Rows collapsed because their event_id appeared earlier in this export."""
        seen, distinct = self._ids.execute("SELECT count(*), count(DISTINCT h) FROM seen_ids").fetchone()
        return int(self.stats.duplicates_in_batches + seen - distinct)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._growing is not None and not self._growing.finished:
            self._growing.fail(RuntimeError("the export parser was closed"))  # unblocks its reader
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

    def _parse_block(self, blk: pa.Table, data: memoryview, offsets: np.ndarray,
                     bad_utf8: Optional[np.ndarray]) -> Optional[pa.Table]:
        """One block -> rows of every non-blank line (``reason`` NULL for a good event);
        ``properties`` are string views (of the block for the fast path)."""
        ppos = pc.find_substring(blk.column("line"), _PROPERTIES_KEY).to_numpy(zero_copy_only=False)
        buffer = pa.py_buffer(data)
        raw = np.frombuffer(buffer, dtype=np.uint8)
        fast_ok, s_start, s_len, x_start, x_len = _fast_lines(raw, offsets, ppos, bad_utf8)
        parts = []
        slow_mask = ~fast_ok
        if fast_ok.any():
            x = _string_views(buffer, x_start[fast_ok], x_len[fast_ok])
            fx = pa.table({
                "line_no": blk.column("line_no").filter(pa.array(fast_ok)),
                "s_tok": _string_views(buffer, s_start[fast_ok], s_len[fast_ok]),
                "x": x,
            })
            done = self._sql(self._fast_final_sql, fx=fx)
            if not np.array_equal(done.column("line_no").to_numpy(), fx.column("line_no").to_numpy()):
                raise RuntimeError("DuckDB changed the order of the parsed lines")  # threads=1 keeps it
            done = done.append_column("properties", x)
            parsed = done.column("parsed")
            if not pc.all(parsed).as_py():  # S or X was not valid JSON: the general path decides
                first = blk.column("line_no")[0].as_py()
                failed = pc.filter(done.column("line_no"), pc.invert(parsed)).to_numpy() - first
                slow_mask[failed] = True
                done = filter_rows(done, parsed)
            parts.append(done.drop_columns(["parsed"]))
        if slow_mask.any():
            slow = self._sql(self._slow_sql, sx=blk.filter(pa.array(slow_mask)))
            general = self._sql(self._final_sql, px=slow)
            at = general.schema.get_field_index("properties")
            views = general.column(at).cast(_TEXT_VIEW)
            general = general.remove_column(at).append_column("properties", views)
            parts.append(general.select(parts[0].column_names) if parts else general)
        del fast_ok, slow_mask
        if not parts:
            return None
        out = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        # Lines that stage 3 rejected (event name or time unusable) need their raw text.
        need = pc.and_(pc.is_valid(out.column("reason")), pc.is_null(out.column("raw_line")))
        if pc.any(need).as_py():
            first = blk.column("line_no")[0].as_py()
            index = pc.subtract(out.column("line_no"), first)
            texts = pc.take(blk.column("line"), pc.if_else(need, index, 0))
            texts = pc.utf8_rtrim(texts, characters="\r\n").cast(pa.string())
            raw_line = pc.if_else(need, texts, out.column("raw_line").cast(pa.string()))
            out = out.set_column(out.schema.get_field_index("raw_line"), "raw_line", raw_line)
        return out

    def parse(self, source: Path | str | GrowingFile, *, background: bool = False, ahead: int = 1) -> Iterator[ParsedBatch]:
        """Batches of at most ``batch_rows`` parsed events (plus the rejected lines).

        ``background=True``: the blocks are read and parsed by a background thread, up to
        ``ahead`` batches ahead (:class:`Prefetch`, started at once), while the calling
        thread deduplicates the previous batch and does whatever it does with it (the
        warehouse insert): both stages run in DuckDB / Arrow, which release the GIL, so
        they overlap on a second core.  ``source`` may be a :class:`GrowingFile` (an
        export still downloading): parsing then overlaps the download too.  The batches,
        their order and the counts are the same either way."""
        if isinstance(source, GrowingFile):
            self._growing = source
        raw: Iterator = self._raw_batches(source if isinstance(source, GrowingFile) else Path(source))
        if background:
            raw = Prefetch(raw, depth=ahead)
            self._active = raw
        return self._finished(raw, background)

    def _finished(self, raw: Iterator, background: bool) -> Iterator[ParsedBatch]:
        try:
            for pending, rejected in raw:
                yield self._finish(pending, rejected)
        finally:
            if background:
                raw.close()  # stops and joins the thread (also when the caller stopped early)
                self._active = None

    def _raw_batches(self, path: Path | GrowingFile) -> Iterator[tuple[list[pa.Table], list[pa.Table]]]:
        """(good rows, rejected rows) per batch, not deduplicated yet."""
        if isinstance(path, Path) and (not path.exists() or os.path.getsize(path) == 0):
            return
        line_no = 0
        pending: list[pa.Table] = []
        pending_rows = 0
        rejected: list[pa.Table] = []
        for data, offsets in _line_blocks(path, self.block_bytes):
            blk, bad_utf8 = _block_table(data, offsets, line_no)
            line_no += blk.num_rows
            out = self._parse_block(blk, data, offsets, bad_utf8)
            del blk
            if out is None:
                continue
            reasons = out.column("reason")
            if reasons.null_count == out.num_rows:  # the usual case: no copy
                bad, good = out.slice(0, 0), out
            else:
                is_rejected = pc.is_valid(reasons)
                bad = filter_rows(out, is_rejected)
                good = filter_rows(out, pc.invert(is_rejected))
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
            id_hash = table.column("id_hash").to_numpy()
            keep = _first_occurrences(table.column("event_id"), id_hash, table.column("line_no").to_numpy())
            if keep is not None:  # a filter copies views, not the properties text
                table = filter_rows(table, keep)
                self.stats.duplicates_in_batches += int(len(keep) - keep.sum())
                id_hash = id_hash[keep]
            properties = table.column("properties")
            properties = pa.chunked_array(
                [pa.ExtensionArray.from_storage(PROPERTIES_TYPE, chunk) for chunk in properties.chunks],
                type=PROPERTIES_TYPE,
            )
            events = table.select(["line_no", *PARSED_COLUMNS])
            events = events.set_column(events.schema.get_field_index("properties"), "properties", properties)
            # Which ids an earlier batch of this export kept (by hash: a collision only
            # costs the warehouse one lookup more): only those can be in the table already
            # when its days had no row before this export (see insert_new_events.sql).
            seen_earlier = np.zeros(len(id_hash), dtype=bool)
            self._ids.register("kept", pa.table({"i": np.arange(len(id_hash)), "h": id_hash}))
            try:
                rows = self._ids.execute("SELECT i FROM kept WHERE h IN (SELECT h FROM seen_ids)").fetchnumpy()["i"]
                seen_earlier[np.asarray(rows, dtype=np.int64)] = True
                self._ids.execute("INSERT INTO seen_ids SELECT h FROM kept")
            finally:
                self._ids.unregister("kept")
            events = events.append_column("seen_earlier_in_export", pa.array(seen_earlier))
        else:
            events = _empty_events()
        rej = pa.concat_tables(rejected) if rejected else _empty_rejected()
        if rej.num_rows:
            raw = pc.utf8_slice_codeunits(rej.column("raw_line"), 0, MAX_REJECTED_LINE_CHARS)
            rej = rej.set_column(rej.schema.get_field_index("raw_line"), "raw_line", raw)
        return ParsedBatch(events=events, rejected=rej)


T = TypeVar("T")


class Prefetch(Iterator[T]):
    """``items`` produced by a background thread (started at once), at most ``depth``
    ahead of the consumer.

    The export parser and the warehouse insert both run in DuckDB, which releases the GIL:
    with the parser ahead, batch N+1 is parsed while batch N is inserted (the two stages
    overlap on a second core).  The producer starts an item only when fewer than
    ``depth`` are waiting: memory grows by ``depth`` batches, not with the file.  An
    exception of the producer is raised in the consumer; :meth:`close` (also when the
    consumer stops early) stops the producer before its next item and joins it, so the
    caller may close what the producer uses right after.
    """

    _ITEM, _END, _ERROR = 0, 1, 2

    def __init__(self, items: Iterator[T], depth: int = 1) -> None:
        self._q: "queue.Queue[tuple[int, object]]" = queue.Queue()
        self._ahead = threading.Semaphore(max(1, depth))  # items started and not yet taken
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._work, args=(items,), name="mixpanel-export-parse", daemon=True)
        self._thread.start()

    def _work(self, items: Iterator[T]) -> None:
        try:
            source = iter(items)
            while True:
                while not self._ahead.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    item = next(source)
                except StopIteration:
                    self._q.put((self._END, None))
                    return
                self._q.put((self._ITEM, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._q.put((self._ERROR, exc))

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        kind, value = self._q.get()
        if kind == self._ITEM:
            self._ahead.release()  # the producer starts the next item while this one is used
            return value  # type: ignore[return-value]
        self._ended = True
        self.close()
        if kind == self._END:
            raise StopIteration
        raise value  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def prefetch(items: Iterator[T], depth: int = 1) -> Prefetch[T]:
    """:class:`Prefetch` (kept for callers of the function)."""
    return Prefetch(items, depth)


def _empty_events() -> pa.Table:
    return pa.table(
        {
            "line_no": pa.array([], pa.int64()),
            "event_id": pa.array([], pa.string()),
            "event_name": pa.array([], pa.string()),
            "distinct_id": pa.array([], pa.string()),
            "event_timestamp": pa.array([], pa.timestamp("us")),
            "event_date": pa.array([], pa.date32()),
            "properties": pa.ExtensionArray.from_storage(PROPERTIES_TYPE, pa.array([], _TEXT_VIEW)),
            "device_id": pa.array([], pa.string()),
            "os": pa.array([], pa.string()),
            "mp_processing_time_ms": pa.array([], pa.int64()),
            "seen_earlier_in_export": pa.array([], pa.bool_()),
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
