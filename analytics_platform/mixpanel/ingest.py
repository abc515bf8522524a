"""Ingestion of Mixpanel raw exports into the warehouse (no Dagster imports).

For each contiguous day range: ONE export request streamed to a temp file
(``MixpanelResource.export_to_file``), bulk-parsed in batches (:mod:`export_parse`), each
batch inserted with one statement (``sql/mixpanel/insert_new_events.sql``: the rows whose
``event_id`` is absent among the batch's event dates, so BigQuery prunes the target to
those partitions): rows already loaded keep their ``inserted_at`` and nothing is
duplicated, however often a day is re-fetched.  Rejected lines go to
``mixpanel_events_rejected`` once per (partition_date, line).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_platform.common import UTC, to_epoch_micros
from analytics_platform.mixpanel.export_parse import BATCH_ROWS, ExportParser
from analytics_platform.mixpanel.tables import (
    EVENTS_SCHEMA,
    REJECTED_SCHEMA,
    REJECTED_TABLE,
    ensure_events_table,
    ensure_rejected_table,
)

# Mixpanel allows 3 export queries per second: never start two closer than this.
MIN_SECONDS_BETWEEN_EXPORTS = 0.4

_log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    ranges: list[tuple[dt.date, dt.date]] = field(default_factory=list)
    export_requests: int = 0
    export_bytes: int = 0
    lines_fetched: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict = field(default_factory=dict)
    rejected_rows_new: int = 0
    duplicates_collapsed: int = 0
    rows_inserted: int = 0
    rows_already_loaded: int = 0
    rows_outside_requested_days: int = 0
    rows_deleted_uncollected: int = 0
    properties_reserialised: int = 0
    partition_rows: dict = field(default_factory=dict)  # "YYYY-MM-DD" -> rows after the load
    seconds: float = 0.0

    def metadata(self) -> dict[str, Any]:
        """Counts for the materialization (no secrets, plain numbers)."""
        return {
            "export_requests": self.export_requests,
            "export_ranges": ", ".join(f"{a}..{b}" for a, b in self.ranges),
            "export_bytes": self.export_bytes,
            "lines_fetched": self.lines_fetched,
            "rows_valid": self.rows_valid,
            "rows_rejected": self.rows_rejected,
            "rejected_rows_new": self.rejected_rows_new,
            "duplicates_collapsed": self.duplicates_collapsed,
            "rows_inserted": self.rows_inserted,
            "rows_already_loaded": self.rows_already_loaded,
            "rows_outside_requested_days": self.rows_outside_requested_days,
            "rows_deleted_uncollected_events": self.rows_deleted_uncollected,
            "properties_reserialised": self.properties_reserialised,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "seconds": round(self.seconds, 2),
        }


def rejected_partition_dates(
    rejected_line_no: np.ndarray,
    good_line_no: np.ndarray,
    good_dates: np.ndarray,
    first_day: dt.date,
    last_day: dt.date,
    carry: Optional[dt.date],
) -> list[dt.date]:
    """The partition a rejected line is filed under.

    A one-day export: that day.  A range: the export streams day after day, so the event
    date of the nearest preceding valid line (clamped to the range), else the first day.
    """
    if first_day == last_day or len(rejected_line_no) == 0:
        return [first_day] * len(rejected_line_no)
    order = np.argsort(good_line_no, kind="stable")
    sorted_lines = good_line_no[order]
    sorted_dates = good_dates[order]
    out = []
    positions = np.searchsorted(sorted_lines, rejected_line_no, side="left") - 1
    for pos in positions:
        day = sorted_dates[pos] if pos >= 0 else carry
        if day is None:
            day = first_day
        day = min(max(day, first_day), last_day)
        out.append(day)
    return out


class EventsLoader:
    """Loads parsed batches into the events and rejected tables."""

    def __init__(self, warehouse: Any, dataset: str, table: str, inserted_at: dt.datetime) -> None:
        self.warehouse = warehouse
        self.dataset = dataset
        self.table = table
        self.inserted_at = inserted_at
        ensure_events_table(warehouse, dataset, table)
        ensure_rejected_table(warehouse, dataset)

    def load_events(self, events: pa.Table) -> int:
        """Insert the batch's rows whose event_id is absent (within the batch's event
        dates, `sql/mixpanel/insert_new_events.sql`); return the rows inserted."""
        if events.num_rows == 0:
            return 0
        bounds = pc.min_max(events.column("event_date"))
        params = {"date_from": bounds["min"].as_py(), "date_to": bounds["max"].as_py()}
        return self.warehouse.insert_from_batch(
            "mixpanel/insert_new_events",
            self._rows(events),
            EVENTS_SCHEMA,
            params,
            batch_dataset=self.dataset,
            dataset=self.dataset,
            table=self.table,
        )

    def _rows(self, events: pa.Table) -> pa.Table:
        """The batch with the table's columns, types and order."""
        ts = events.column("event_timestamp")
        if ts.type.tz is None:
            ts = ts.cast(pa.timestamp("us", tz="UTC"))
        inserted = pa.array(
            np.full(events.num_rows, to_epoch_micros(self.inserted_at), dtype=np.int64), type=pa.int64()
        ).cast(pa.timestamp("us", tz="UTC"))
        return pa.table(
            {
                "event_id": events.column("event_id").cast(pa.string()),
                "event_name": events.column("event_name").cast(pa.string()),
                "distinct_id": events.column("distinct_id").cast(pa.string()),
                "event_timestamp": ts,
                "inserted_at": inserted,
                "properties": events.column("properties").cast(pa.string()),
                "event_date": events.column("event_date"),
                "device_id": events.column("device_id").cast(pa.string()),
                "os": events.column("os").cast(pa.string()),
                "mp_processing_time_ms": events.column("mp_processing_time_ms"),
            }
        )

    def load_rejected(self, rejected: pa.Table, partition_dates: Sequence[dt.date], seen_at: dt.datetime) -> int:
        """Insert each (partition_date, line) not recorded yet; return rows inserted."""
        if rejected.num_rows == 0:
            return 0
        raw = rejected.column("raw_line").to_pylist()
        reasons = rejected.column("reason").to_pylist()
        rows: dict[tuple[dt.date, str], dict] = {}
        for line, reason, day in zip(raw, reasons, partition_dates):
            digest = hashlib.sha256((line or "").encode("utf-8", "replace")).hexdigest()
            rows.setdefault(
                (day, digest),
                {"raw_line": line, "reason": reason, "partition_date": day, "seen_at": seen_at, "line_hash": digest},
            )
        days = [k[0] for k in rows]
        table = pa.Table.from_pylist(list(rows.values()))
        result = self.warehouse.load(
            table,
            self.dataset,
            REJECTED_TABLE,
            REJECTED_SCHEMA,
            mode="insert_missing",
            key_columns=("partition_date", "line_hash"),
            match_filter="T.partition_date BETWEEN @match_from AND @match_to",
            match_params={"match_from": min(days), "match_to": max(days)},
        )
        return int(result.rows_affected)


def ingest_ranges(
    *,
    warehouse: Any,
    mixpanel: Any,
    dataset: str,
    table: str,
    ranges: Sequence[tuple[dt.date, dt.date]],
    events: Sequence[str],
    now: Optional[dt.datetime] = None,
    workdir: Optional[Path] = None,
    batch_rows: int = BATCH_ROWS,
    log: Optional[Callable[[str], None]] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IngestResult:
    """Fetch and load every range (one export request per range, retried by the client)."""
    say = log or _log.info
    started = time.monotonic()
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    result = IngestResult(ranges=list(ranges))
    loader = EventsLoader(warehouse, dataset, table, inserted_at=now)
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="mixpanel_ingest_")) if own_dir else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    last_request = 0.0
    try:
        for first_day, last_day in ranges:
            wait = MIN_SECONDS_BETWEEN_EXPORTS - (time.monotonic() - last_request)
            if last_request and wait > 0:
                sleep(wait)
            path = folder / f"export_{first_day}_{last_day}.jsonl"
            stats = mixpanel.export_to_file(first_day, last_day, list(events), dest=path)
            last_request = time.monotonic()
            result.export_requests += int(getattr(stats, "requests", 1))
            result.export_bytes += int(getattr(stats, "bytes", 0))
            say(f"export {first_day}..{last_day}: {stats.lines} lines, {stats.bytes} bytes")
            carry: Optional[dt.date] = None
            inserted_here = 0
            with ExportParser(batch_rows=batch_rows) as parser:
                for batch in parser.parse(path):
                    ev = batch.events
                    if ev.num_rows:
                        dates = ev.column("event_date")
                        inside = pc.and_(
                            pc.greater_equal(dates, pa.scalar(first_day, pa.date32())),
                            pc.less_equal(dates, pa.scalar(last_day, pa.date32())),
                        )
                        result.rows_outside_requested_days += ev.num_rows - pc.sum(inside).as_py()
                        inserted_here += loader.load_events(ev)
                    if batch.rejected.num_rows:
                        good_lines = ev.column("line_no").to_numpy() if ev.num_rows else np.array([], np.int64)
                        good_dates = np.array(ev.column("event_date").to_pylist(), dtype=object) if ev.num_rows else np.array([], object)
                        days = rejected_partition_dates(
                            batch.rejected.column("line_no").to_numpy(),
                            good_lines,
                            good_dates,
                            first_day,
                            last_day,
                            carry,
                        )
                        result.rejected_rows_new += loader.load_rejected(batch.rejected, days, now)
                    if ev.num_rows:
                        carry = ev.column("event_date")[-1].as_py()
                duplicates = parser.duplicates_total()
                st = parser.stats
            result.lines_fetched += st.lines
            result.rows_valid += st.valid
            result.rows_rejected += st.rejected
            result.properties_reserialised += st.reserialised_properties
            for reason, count in st.rejected_by_reason.items():
                result.rejected_by_reason[reason] = result.rejected_by_reason.get(reason, 0) + count
            result.duplicates_collapsed += duplicates
            result.rows_inserted += inserted_here
            result.rows_already_loaded += st.valid - duplicates - inserted_here
            path.unlink(missing_ok=True)
            result.rows_deleted_uncollected += warehouse.execute_file(
                "mixpanel/delete_uncollected_events",
                {"from_date": first_day, "to_date": last_day, "events": sorted(events)},
                dataset=dataset,
                table=table,
            )
            counts = warehouse.run_file(
                "mixpanel/partition_counts",
                {"from_date": first_day, "to_date": last_day},
                dataset=dataset,
                table=table,
            )
            day = first_day
            while day <= last_day:
                result.partition_rows.setdefault(day.isoformat(), 0)
                day += dt.timedelta(days=1)
            for day, rows in zip(counts["event_date"], counts["row_count"]):
                key = day.isoformat() if hasattr(day, "isoformat") else str(day)[:10]
                result.partition_rows[key] = int(rows)
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result
