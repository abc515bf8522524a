"""SQL I/O and the work of the mixpanel assets (no Dagster imports).

* :func:`refresh_event_days` — ``mixpanel_events``: the run's days, one export request per
  contiguous range (:func:`ingest_ranges`): streamed to a temp file, bulk-parsed in batches
  (:mod:`export_parse`), each batch inserted with one statement
  (``sql/mixpanel/insert_new_events.sql``: the rows whose ``event_id`` is absent among the
  batch's event dates): rows already loaded keep their ``inserted_at`` and nothing is
  duplicated, however often a day is re-fetched.  Rejected lines go to
  ``mixpanel_events_rejected`` once per (partition_date, line).
* :func:`detect_event_anomalies` — ``event_anomalies``: one detection run
  (:func:`detect_and_alert`).

One detection run: count the examined windows in the warehouse (set-based SQL, one query
per (window, threshold) pair of the configuration), keep the windows not recorded yet, walk
the cooldown (:func:`rules.assign_statuses`, state read from the table), record the new
windows ('pending' or 'suppressed') with their samples, then deliver every 'pending' alert
of the table — new ones and those a previous run could not deliver, whatever their age —
and mark the delivered ones 'sent'.  Undelivered alerts stay 'pending' for the next run.
The rules themselves (windows, cooldown, rows and messages) are in :mod:`rules`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics_platform.common import (
    UTC,
    contiguous_day_ranges,
    partition_day,
    read_sql,
    render_sql,
    strip_sql_comments,
    to_epoch_micros,
    to_int,
    utc_now,
)
from analytics_platform.mixpanel import rules as R
from analytics_platform.mixpanel.events_config import EventsConfig, events_config_from_settings
from analytics_platform.mixpanel.export_parse import BATCH_ROWS, ExportParser, ParsedBatch, filter_rows
from analytics_platform.resources.warehouse import Column
from analytics_platform.mixpanel.tables import (
    ANOMALIES_SCHEMA,
    ANOMALIES_TABLE,
    EVENTS_SCHEMA,
    EXPORT_LOG_SCHEMA,
    EXPORT_LOG_TABLE,
    REJECTED_SCHEMA,
    REJECTED_TABLE,
    ensure_anomalies_table,
    ensure_events_table,
    ensure_export_log_table,
    ensure_rejected_table,
)
from analytics_platform.resources.export_budget import export_context
from analytics_platform.resources.growing_file import GrowingFile

_log = logging.getLogger(__name__)
Log = Callable[[str], None]

# The target rows an anomalies load may match: the batch's window starts (prunes the scan).
MATCH_WINDOW_STARTS = strip_sql_comments(read_sql("mixpanel/match_window_starts")).strip()


# --------------------------------------------------------------------------- events
# Mixpanel allows 3 export queries per second: never start two closer than this.
MIN_SECONDS_BETWEEN_EXPORTS = 0.4
# Batches the parser may run ahead of the loads (each holds ~110 MB of the export's
# blocks): while the export downloads, the parser works through up to this many + 1.
PARSE_AHEAD = 2

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
    budget_waited_seconds: float = 0.0  # waiting for the shared export budget
    export_log_rows: int = 0  # rows written to mixpanel_export_log
    purpose: str = ""  # what the export queries were charged as (export budget)
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
            "export_budget_purpose": self.purpose,
            "export_budget_waited_seconds": round(self.budget_waited_seconds, 2),
            "export_log_rows": self.export_log_rows,
            "seconds": round(self.seconds, 2),
        }


# Reason of a row whose properties the warehouse cannot parse (insert_unparsable_events.sql).
WAREHOUSE_REJECT_REASON = "warehouse_invalid_json"
# The statements of one batch write, in one transaction (Warehouse.write_batch): insert
# the new events, count the ones the warehouse cannot parse and, only if there are any,
# quarantine them (the JSON is parsed twice per batch, not three times).
WRITE_EVENTS_STATEMENTS = (
    "mixpanel/insert_new_events",
    "mixpanel/count_unparsable_events",
    "mixpanel/insert_unparsable_events",
)
WRITE_EVENTS_GUARDS = {"mixpanel/insert_unparsable_events": "mixpanel/count_unparsable_events"}
# The batch as staged: the table's columns, properties as the text received (parsed by
# the statements with SAFE.PARSE_JSON).
# seen_earlier_in_export: the parser kept the id (by hash) from an earlier batch of the
# export; only such ids are looked up in the table when its days were empty before the
# export and hold only the export's rows (insert_new_events.sql).
EVENTS_BATCH_SCHEMA = (
    *(Column(c.name, "STRING") if c.type == "JSON" else c for c in EVENTS_SCHEMA),
    Column("seen_earlier_in_export", "BOOL"),
)


class EventsLoader:
    """Loads parsed batches into the events and rejected tables."""

    def __init__(self, warehouse: Any, dataset: str, table: str, inserted_at: dt.datetime) -> None:
        self.warehouse = warehouse
        self.dataset = dataset
        self.table = table
        self.inserted_at = inserted_at
        self.write_lock = f"{dataset}.{table}"  # writers of this table never interleave
        self.rejected_in_warehouse = 0  # rows of loaded batches the warehouse could not parse
        self.rejected_in_warehouse_new = 0  # ... of which quarantined for the first time
        ensure_events_table(warehouse, dataset, table)
        ensure_rejected_table(warehouse, dataset)
        warehouse.ensure_write_lock(dataset, self.write_lock)

    def load_events(
        self,
        events: pa.Table,
        *,
        slice_days: Optional[tuple[dt.date, dt.date]] = None,
        slice_rows_expected: int = -1,
    ) -> int:
        """Insert the batch's rows whose event_id is absent (within the batch's event
        dates, `sql/mixpanel/insert_new_events.sql`); return the rows inserted.

        ``slice_rows_expected``: when the export's days (``slice_days``) had no row before
        this export, the rows it has inserted into them so far (else -1).  If the days hold
        exactly that many rows when the batch is written, no other writer touched them and
        only the ids seen in an earlier batch are looked up in the table; otherwise (or
        with -1) every id is, as for a re-export of a loaded day.

        One transaction under the events table's write lock (two writers of the same day
        never both insert an event_id, whatever launched them); rows whose properties the
        warehouse cannot parse go to the rejected table (`insert_unparsable_events.sql`)
        and are counted in ``rejected_in_warehouse``."""
        if events.num_rows == 0:
            return 0
        bounds = pc.min_max(events.column("event_date"))
        first, last = bounds["min"].as_py(), bounds["max"].as_py()
        slice_from, slice_to = slice_days or (first, last)
        params = {
            "date_from": first,
            "date_to": last,
            "slice_from": slice_from,
            "slice_to": slice_to,
            "rows_expected": int(slice_rows_expected) if slice_days else -1,
        }
        inserted, unparsable, quarantined = self.warehouse.write_batch(
            WRITE_EVENTS_STATEMENTS,
            self._rows(events),
            EVENTS_BATCH_SCHEMA,
            params,
            batch_dataset=self.dataset,
            lock=self.write_lock,
            run_if_positive=WRITE_EVENTS_GUARDS,
            dataset=self.dataset,
            table=self.table,
            rejected=REJECTED_TABLE,
        )
        self.rejected_in_warehouse += unparsable
        self.rejected_in_warehouse_new += quarantined
        return inserted

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
                # as parsed (JSON text over string views): no copy; each warehouse converts it
                "properties": events.column("properties"),
                "event_date": events.column("event_date"),
                "device_id": events.column("device_id").cast(pa.string()),
                "os": events.column("os").cast(pa.string()),
                "mp_processing_time_ms": events.column("mp_processing_time_ms"),
                # unknown (a batch not from the parser): every id is looked up
                "seen_earlier_in_export": (
                    events.column("seen_earlier_in_export")
                    if "seen_earlier_in_export" in events.column_names
                    else pa.array(np.ones(events.num_rows, dtype=bool))
                ),
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
    project_timezone: str = "UTC",
    purpose: str = "backfill",
    run_id: Optional[str] = None,
    clock: Callable[[], dt.datetime] = utc_now,
) -> IngestResult:
    """Fetch and load every range: one export request per slice of at most
    ``rules.MAX_EXPORT_DAYS`` days (retried by the client, each request charged to the
    shared export budget as ``purpose``), then one ``mixpanel_export_log`` row per day.

    The export is asked for the project-local dates that cover each UTC range
    (:func:`rules.export_dates`, ``MIXPANEL_PROJECT_TIMEZONE``), never past the project's
    local today; only the events of the range's own UTC days are loaded."""
    say = log or _log.info
    started = time.monotonic()
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    slices = R.export_slices(ranges, R.utc_days_per_export(project_timezone))
    result = IngestResult(ranges=list(slices), purpose=purpose)
    with warehouse.session():  # the set-up's short statements share one open database
        loader = EventsLoader(warehouse, dataset, table, inserted_at=now)
        ensure_export_log_table(warehouse, dataset)
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="mixpanel_ingest_")) if own_dir else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    last_request = 0.0
    try:
        for first_day, last_day in slices:
            wait = MIN_SECONDS_BETWEEN_EXPORTS - (time.monotonic() - last_request)
            if last_request and wait > 0:
                sleep(wait)
            path = folder / f"export_{first_day}_{last_day}.jsonl"
            dates = R.export_dates(first_day, last_day, project_timezone, now)
            queried_at = clock().astimezone(UTC)
            with contextlib.ExitStack() as stack:
                # The export is parsed while it downloads; its batches are loaded only once
                # it is complete (a cut or abandoned body never reaches the warehouse).
                parser, batches, stats = _export_and_parse(
                    stack, mixpanel, dates, events, path, batch_rows=batch_rows, purpose=purpose, run_id=run_id
                )
                if stats is None:
                    say(f"export {first_day}..{last_day}: not started yet in {project_timezone}; nothing to ask")
                else:
                    last_request = time.monotonic()
                    result.export_requests += int(getattr(stats, "requests", 1))
                    result.export_bytes += int(getattr(stats, "bytes", 0))
                    result.budget_waited_seconds += float(getattr(stats, "budget_waited_seconds", 0.0))
                    asked = "" if dates == (first_day, last_day) else f" (asked {dates[0]}..{dates[1]} in {project_timezone})"
                    say(f"export {first_day}..{last_day}{asked}: {stats.lines} lines, {stats.bytes} bytes")
                # Rows of events no longer collected go first: from here on the load only
                # inserts, so (after - before) is what this export added to each day.
                with warehouse.session():
                    result.rows_deleted_uncollected += warehouse.execute_file(
                        "mixpanel/delete_uncollected_events",
                        {"from_date": first_day, "to_date": last_day, "events": sorted(events)},
                        dataset=dataset,
                        table=table,
                    )
                    before = _partition_counts(warehouse, dataset, table, first_day, last_day)
                carry: Optional[dt.date] = None
                inserted_here = outside_here = 0
                rejected_by_day: dict[dt.date, int] = {}
                unparsable_before = loader.rejected_in_warehouse
                quarantined_before = loader.rejected_in_warehouse_new
                for batch in batches:  # batch N+1 is parsed while N is inserted
                    ev = batch.events
                    if ev.num_rows:
                        ev_dates = ev.column("event_date")
                        inside = pc.and_(
                            pc.greater_equal(ev_dates, pa.scalar(first_day, pa.date32())),
                            pc.less_equal(ev_dates, pa.scalar(last_day, pa.date32())),
                        )
                        own_days = filter_rows(ev, inside)  # a run writes its own partitions only
                        outside_here += ev.num_rows - own_days.num_rows
                        inserted_here += loader.load_events(
                            own_days,
                            slice_days=(first_day, last_day),
                            slice_rows_expected=inserted_here if not any(before.values()) else -1,
                        )
                    if batch.rejected.num_rows:
                        good_lines = ev.column("line_no").to_numpy() if ev.num_rows else np.array([], np.int64)
                        good_dates = np.array(ev.column("event_date").to_pylist(), dtype=object) if ev.num_rows else np.array([], object)
                        days = R.rejected_partition_dates(
                            batch.rejected.column("line_no").to_numpy(),
                            good_lines,
                            good_dates,
                            first_day,
                            last_day,
                            carry,
                        )
                        for day in days:
                            rejected_by_day[day] = rejected_by_day.get(day, 0) + 1
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
            result.rows_outside_requested_days += outside_here
            # rows the warehouse could not parse (BigQuery's SAFE.PARSE_JSON): rejected too
            unparsable_here = loader.rejected_in_warehouse - unparsable_before
            if unparsable_here:
                result.rows_rejected += unparsable_here
                result.rejected_by_reason[WAREHOUSE_REJECT_REASON] = (
                    result.rejected_by_reason.get(WAREHOUSE_REJECT_REASON, 0) + unparsable_here
                )
                result.rejected_rows_new += loader.rejected_in_warehouse_new - quarantined_before
            result.rows_already_loaded += st.valid - duplicates - inserted_here - outside_here - unparsable_here
            path.unlink(missing_ok=True)
            with warehouse.session():  # the slice's bookkeeping: one open database
                after = _partition_counts(warehouse, dataset, table, first_day, last_day)
                slice_days = [first_day + dt.timedelta(days=i) for i in range((last_day - first_day).days + 1)]
                for day in slice_days:
                    result.partition_rows[day.isoformat()] = after.get(day, 0)
                log_rows = R.export_log_rows(
                    days=slice_days,
                    run_id=run_id,
                    export_query_time=queried_at,
                    asked=dates,
                    valid_by_day=st.valid_by_day,
                    rejected_by_day=rejected_by_day,
                    counts_before=before,
                    counts_after=after,
                    recorded_at=clock().astimezone(UTC),
                    purpose=purpose,
                )
                result.export_log_rows += write_export_log(warehouse, dataset, log_rows)
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _export_and_parse(
    stack: contextlib.ExitStack,
    mixpanel: Any,
    dates: Optional[tuple[dt.date, dt.date]],
    events: Sequence[str],
    path: Path,
    *,
    batch_rows: int,
    purpose: str,
    run_id: str,
) -> tuple[ExportParser, Iterator[ParsedBatch], Any]:
    """Download the slice's export into ``path`` while parsing it; return (parser, batches,
    the export's stats or None when there was nothing to ask).

    The parser follows the file as it grows (:class:`GrowingFile`) in a background thread,
    up to ``PARSE_AHEAD`` batches ahead; this returns only when the download is complete,
    so no batch is loaded from a cut body.  A download that had to start over (a retried
    request) is parsed again from its complete file: what was parsed of the abandoned
    attempt is dropped with its parser."""
    parser = stack.enter_context(ExportParser(batch_rows=batch_rows))
    if dates is None:  # nothing of these days has happened in the project's zone yet
        path.write_bytes(b"")
        return parser, parser.parse(path, background=True), None
    growing = GrowingFile()
    batches = parser.parse(growing, background=True, ahead=PARSE_AHEAD)
    with export_context(purpose, run_id):
        stats = mixpanel.export_to_file(dates[0], dates[1], list(events), dest=path, progress=growing)
    if growing.generation != 1 or not growing.finished:
        parser.close()
        parser = stack.enter_context(ExportParser(batch_rows=batch_rows))
        batches = parser.parse(path, background=True)
    return parser, batches, stats


def _partition_counts(warehouse: Any, dataset: str, table: str, first_day: dt.date, last_day: dt.date) -> dict[dt.date, int]:
    """Rows per day of ``[first_day, last_day]`` in the events table (days without rows absent)."""
    counts = warehouse.run_file(
        "mixpanel/partition_counts",
        {"from_date": first_day, "to_date": last_day},
        dataset=dataset,
        table=table,
    )
    out: dict[dt.date, int] = {}
    for day, rows in zip(counts["event_date"], counts["row_count"]):
        key = day if isinstance(day, dt.date) and not isinstance(day, dt.datetime) else pd.Timestamp(day).date()
        out[key] = int(rows)
    return out


def write_export_log(warehouse: Any, dataset: str, rows: Sequence[dict]) -> int:
    """Record a slice's per-day rows in ``{dataset}.mixpanel_export_log`` (once per (day,
    run_id, export_query_time): a retried write adds nothing); return rows written."""
    if not rows:
        return 0
    days = [r["day"] for r in rows]
    result = warehouse.load(
        pd.DataFrame.from_records(list(rows)),
        dataset,
        EXPORT_LOG_TABLE,
        EXPORT_LOG_SCHEMA,
        mode="insert_missing",
        key_columns=("day", "run_id", "export_query_time"),
        match_filter="T.day BETWEEN @match_from AND @match_to",
        match_params={"match_from": min(days), "match_to": max(days)},
    )
    return int(result.rows_affected)


@dataclass
class EventDaysResult:
    """What a ``mixpanel_events`` run loaded (the ingestion counts and the partitions)."""

    ingest: IngestResult
    partition_keys: list[str]
    events: list[str]
    table: str  # dataset.table

    def partition_metadata(self, key: str) -> dict[str, Any]:
        """Each day of a range run gets its own row count (not the range's total)."""
        return {"dagster/row_count": int(self.ingest.partition_rows.get(key, 0))}

    def metadata(self) -> dict[str, Any]:
        """The run's counts (a range run: over all its days; each day's own row count is
        :meth:`partition_metadata`)."""
        rows = sum(self.ingest.partition_rows.get(k, 0) for k in self.partition_keys)
        return {
            "run_rows": rows,
            **self.ingest.metadata(),
            "collected_events": list(self.events),
            "partition_rows": dict(self.ingest.partition_rows),
            "table": self.table,
            "dagster/table_name": self.table,
        }


def refresh_event_days(
    *,
    warehouse: Any,
    mixpanel: Any,
    settings: Any,
    partition_keys: Sequence[str],
    log: Optional[Log] = None,
    warn: Optional[Log] = None,
    run_id: Optional[str] = None,
    trigger: Optional[str] = None,
) -> EventDaysResult:
    """Fetch and load the collected events of the given days (one export request per
    contiguous range, in slices of at most 30 days).  ``trigger`` (the run's
    ``analytics_platform/trigger`` tag) decides what the export queries are charged as in
    the export budget (:func:`rules.export_purpose`).  Raises ``EventsConfigError`` /
    ``MixpanelError`` (messages safe to show)."""
    say = log or _log.info
    config = events_config_from_settings(settings)
    keys = list(partition_keys)
    ranges = contiguous_day_ranges(keys)
    events = config.collected_event_names()
    dataset, table = settings.bigquery_dataset, settings.bigquery_table
    now = utc_now()
    purpose = R.export_purpose(trigger, [partition_day(k) for k in keys], now.date())
    say(f"Fetching {len(keys)} day(s) in {len(ranges)} range(s) for {len(events)} event(s), as {purpose} in the export budget")
    result = ingest_ranges(
        warehouse=warehouse,
        mixpanel=mixpanel,
        dataset=dataset,
        table=table,
        ranges=ranges,
        events=events,
        now=now,
        log=say,
        project_timezone=settings.mixpanel_project_timezone,
        purpose=purpose,
        run_id=run_id,
    )
    if result.rows_rejected:
        (warn or _log.warning)(
            f"{result.rows_rejected} malformed line(s) quarantined in "
            f"{dataset}.mixpanel_events_rejected: {result.rejected_by_reason}"
        )
    return EventDaysResult(ingest=result, partition_keys=keys, events=events, table=f"{dataset}.{table}")


# --------------------------------------------------------------------------- anomalies
@dataclass
class DetectResult:
    events_monitored: int = 0
    windows_examined: int = 0
    anomalous_windows: int = 0  # anomalous windows in the lookback (recorded before or now)
    new_anomalies: int = 0
    alerts_suppressed: int = 0
    alerts_sent: int = 0
    alerts_pending: int = 0  # still undelivered after this run
    alerts_failed: int = 0  # given up this run (permanent Slack error, see rules.give_up_on_alert)
    pending_retried: int = 0  # alerts from earlier runs this run tried to deliver
    delivery_errors: list = field(default_factory=list)
    table_rows: int = 0
    # the run's parameters, reported with the counts
    as_of: Optional[dt.datetime] = None
    lookback_minutes: int = 0
    cooldown_minutes: int = 0
    table: str = ""  # dataset.event_anomalies

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.table_rows,
            "events_monitored": self.events_monitored,
            "windows_examined": self.windows_examined,
            "anomalous_windows": self.anomalous_windows,
            "new_anomalies": self.new_anomalies,
            "alerts_sent": self.alerts_sent,
            "alerts_suppressed": self.alerts_suppressed,
            "alerts_pending": self.alerts_pending,
            "alerts_failed": self.alerts_failed,
            "pending_retried": self.pending_retried,
            "as_of": self.as_of.isoformat() if self.as_of else "",
            "lookback_minutes": self.lookback_minutes,
            "cooldown_minutes": self.cooldown_minutes,
            "table": self.table,
            "dagster/table_name": self.table,
        }


def bigquery_console_project(settings: Any) -> Optional[str]:
    """The GCP project whose BigQuery console shows the tables, or None.

    The warehouse is BigQuery exactly when ``ANALYTICS_ENV=prod`` (the choice
    ``resources.build_warehouse`` makes from the same settings); elsewhere (local DuckDB)
    alerts link to the Dagster UI instead.
    """
    return settings.gcp_project_id if settings.is_prod else None


def detect_event_anomalies(
    *,
    warehouse: Any,
    slack: Any,
    settings: Any,
    as_of: dt.datetime,
    lookback_minutes: int,
    cooldown_minutes: int,
    log: Optional[Log] = None,
    warn: Optional[Log] = None,
) -> DetectResult:
    """One detection run with the settings' events configuration, dataset, tables and
    Slack default channel.  Raises ``EventsConfigError`` (message safe to show)."""
    config = events_config_from_settings(settings)
    link = R.warehouse_link(
        bigquery_project=bigquery_console_project(settings),
        dataset=settings.bigquery_dataset,
        table=settings.bigquery_table,
        webserver_url=settings.dagster_webserver_url,
    )
    result = detect_and_alert(
        warehouse=warehouse,
        slack=slack,
        config=config,
        dataset=settings.bigquery_dataset,
        table=settings.bigquery_table,
        as_of=as_of,
        lookback_minutes=lookback_minutes,
        cooldown_minutes=cooldown_minutes,
        default_channel=settings.slack_default_channel,
        link=link,
        log=log,
    )
    if result.alerts_pending or result.alerts_failed:
        parts = []
        if result.alerts_pending:
            parts.append(f"{result.alerts_pending} alert(s) could not be delivered and stay pending (the next run retries them)")
        if result.alerts_failed:
            parts.append(f"{result.alerts_failed} alert(s) failed for good on a permanent Slack error "
                         f"(notice posted to {settings.slack_default_channel})")
        (warn or _log.warning)(f"{'; '.join(parts)}: {result.delivery_errors[:5]}")
    return result


def rows_sql(dataset: str, table: str, event_name: str, start: dt.datetime, end: dt.datetime) -> str:
    """The query an alert shows for the window's rows (BigQuery dialect, one line, the
    values written in as literals): ``sql/mixpanel/select_window_rows.sql``."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return R.sql_with_literals(
        render_sql(read_sql("mixpanel/select_window_rows"), dataset=dataset, table=table),
        {"event_date": start.date(), "event_name": event_name, "window_start": start, "window_end": end},
    )


def _ts(value: Any) -> dt.datetime:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").to_pydatetime()


Found = list[tuple[R.Candidate, R.WindowRange]]


def detect_and_alert(
    *,
    warehouse: Any,
    slack: Any,
    config: EventsConfig,
    dataset: str,
    table: str,
    as_of: dt.datetime,
    lookback_minutes: int = 60,
    cooldown_minutes: int = 5,
    default_channel: str = "#data-alerts",
    link: Optional[str] = None,
    now: Optional[Callable[[], dt.datetime]] = None,
    log: Optional[Log] = None,
) -> DetectResult:
    """Detect, record and alert (see the module docstring); re-running records nothing twice."""
    say = log or _log.info
    clock = now or utc_now
    as_of = as_of.astimezone(UTC)
    result = DetectResult(
        as_of=as_of,
        lookback_minutes=lookback_minutes,
        cooldown_minutes=cooldown_minutes,
        table=f"{dataset}.{ANOMALIES_TABLE}",
    )
    ensure_anomalies_table(warehouse, dataset)
    # A detection tick that comes before the first ingestion finds no events, not no table.
    ensure_events_table(warehouse, dataset, table)

    found = _anomalous_windows(warehouse, config, dataset, table, as_of, lookback_minutes, result)
    new, statuses = _new_windows(warehouse, found, dataset, cooldown_minutes)
    result.new_anomalies = len(new)
    to_alert = [(c, r) for c, r in new if statuses[(c.event_name, c.window_start)] == R.ALERT]
    samples = _window_samples(warehouse, to_alert, dataset, table)
    detected_at = clock()
    by_name = {e.name: e for e in config.monitored}
    records = [
        R.new_anomaly_row(
            c,
            r.window_minutes,
            by_name.get(c.event_name),
            statuses[(c.event_name, c.window_start)],
            default_channel=default_channel,
            detected_at=detected_at,
            samples=samples.get((c.event_name, c.window_start), []),
        )
        for c, r in new
    ]
    if records:  # insert_missing: a window is recorded at most once
        _load_anomalies(warehouse, dataset, records, mode="insert_missing")
        result.alerts_suppressed = sum(1 for r in records if r["alert_status"] == R.STATUS_SUPPRESSED)
    new_keys = {(c.event_name, c.window_start) for c, _ in to_alert}
    _deliver_pending(warehouse, slack, dataset, table, new_keys, default_channel, link,
                     detected_at, clock, say, result)
    counts = warehouse.run_file("mixpanel/table_row_count", {}, dataset=dataset, table=ANOMALIES_TABLE)
    result.table_rows = int(counts["n"].iloc[0])
    return result


def _anomalous_windows(
    warehouse: Any,
    config: EventsConfig,
    dataset: str,
    table: str,
    as_of: dt.datetime,
    lookback_minutes: int,
    result: DetectResult,
) -> Found:
    """Anomalous windows among the examined ones, counted in the warehouse."""
    groups = R.window_groups(config)
    result.events_monitored = sum(len(v) for v in groups.values())
    found: Found = []
    for (window_minutes, threshold), events in sorted(groups.items()):
        rng = R.examined_windows(as_of, window_minutes, lookback_minutes)
        result.windows_examined += rng.count * len(events)
        if rng.count == 0:
            continue
        rows = warehouse.run_file(
            "mixpanel/window_counts",
            {
                "events": sorted(e.name for e in events),
                "window_micros": window_minutes * 60_000_000,
                "threshold": int(threshold),
                "scan_start": rng.first_start,
                "scan_end": rng.end,
                "date_from": rng.first_start.date(),
                "date_to": (rng.end - dt.timedelta(microseconds=1)).date(),
            },
            dataset=dataset,
            table=table,
        )
        for name, start, count in zip(rows["event_name"], rows["window_start"], rows["event_count"]):
            found.append((R.Candidate(str(name), _ts(start), int(count)), rng))
    result.anomalous_windows = len(found)
    return found


def _new_windows(
    warehouse: Any, found: Found, dataset: str, cooldown_minutes: int
) -> tuple[Found, dict[tuple[str, dt.datetime], str]]:
    """The found windows not recorded yet, and their statuses (the cooldown walk over the
    table's history)."""
    if not found:
        return [], {}
    earliest = min(c.window_start for c, _ in found)
    history = warehouse.run_file(
        "mixpanel/anomaly_history",
        {
            "events": sorted({c.event_name for c, _ in found}),
            "since": earliest - dt.timedelta(minutes=cooldown_minutes),
        },
        dataset=dataset,
        anomalies=ANOMALIES_TABLE,
    )
    recorded, alerted = R.cooldown_history(
        (str(n), _ts(s), status)
        for n, s, status in zip(history["event_name"], history["window_start"], history["alert_status"])
    )
    new = [(c, r) for c, r in found if (c.event_name, c.window_start) not in recorded]
    return new, R.assign_statuses([c for c, _ in new], alerted, cooldown_minutes)


def _window_samples(
    warehouse: Any, to_alert: Found, dataset: str, table: str
) -> dict[tuple[str, dt.datetime], list[dict]]:
    """Up to ``rules.MAX_SAMPLES`` summarised events of each window to alert (one query
    per window size)."""
    samples: dict[tuple[str, dt.datetime], list[dict]] = {}
    by_size: dict[int, Found] = {}
    for c, r in to_alert:
        by_size.setdefault(r.window_minutes, []).append((c, r))
    for window_minutes, items in by_size.items():
        starts = sorted({c.window_start for c, _ in items})
        scan_start = starts[0]
        scan_end = starts[-1] + dt.timedelta(minutes=window_minutes)
        rows = warehouse.run_file(
            "mixpanel/window_samples",
            {
                "events": sorted({c.event_name for c, _ in items}),
                "window_micros": window_minutes * 60_000_000,
                "window_starts": starts,
                "scan_start": scan_start,
                "scan_end": scan_end,
                "date_from": scan_start.date(),
                "date_to": (scan_end - dt.timedelta(microseconds=1)).date(),
                "per_window": R.MAX_SAMPLES,
            },
            dataset=dataset,
            table=table,
        )
        for rec in rows.to_dict("records"):
            key = (str(rec["event_name"]), _ts(rec["window_start"]))
            props = rec["properties"]
            if props is not None and not isinstance(props, str):
                props = json.dumps(props)
            samples.setdefault(key, []).append(
                R.summarise_sample(rec["distinct_id"], _ts(rec["event_timestamp"]), props)
            )
    return samples


def _load_anomalies(warehouse: Any, dataset: str, records: list[dict], *, mode: str, **options: Any) -> None:
    """Write ``records`` into ``event_anomalies`` keyed on (event_name, window_start)."""
    starts = [r["window_start"] for r in records]
    warehouse.load(
        pd.DataFrame.from_records(records),
        dataset,
        ANOMALIES_TABLE,
        ANOMALIES_SCHEMA,
        mode=mode,
        key_columns=("event_name", "window_start"),
        match_filter=MATCH_WINDOW_STARTS,
        match_params={"match_from": min(starts), "match_to": max(starts)},
        **options,
    )


def _deliver_pending(
    warehouse: Any,
    slack: Any,
    dataset: str,
    table: str,
    new_keys: set,
    default_channel: str,
    link: Optional[str],
    detected_at: dt.datetime,
    clock: Callable[[], dt.datetime],
    say: Log,
    result: DetectResult,
) -> None:
    """Post every 'pending' alert of the table (new and earlier ones), one message per
    window; mark the delivered ones 'sent', count an attempt on the others."""
    pending = warehouse.run_file("mixpanel/pending_alerts", {}, dataset=dataset, anomalies=ANOMALIES_TABLE)
    for rec in pending.to_dict("records"):
        start = _ts(rec["window_start"])
        key = (str(rec["event_name"]), start)
        if key not in new_keys:
            result.pending_retried += 1
        minutes = int(rec["window_minutes"])
        try:
            sample = json.loads(rec["sample"]) if isinstance(rec["sample"], str) else (rec["sample"] or [])
        except ValueError:
            sample = []
        content = R.AlertContent(
            event_name=key[0],
            window_start=start,
            window_minutes=minutes,
            event_count=int(rec["event_count"]),
            threshold=to_int(rec["threshold"]),
            samples=sample,
            link=link,
            rows_sql=rows_sql(dataset, table, key[0], start, start + dt.timedelta(minutes=minutes)),
        )
        text, blocks = R.build_alert(content)
        delivery = slack.post_message(text, blocks=blocks, channel=rec["channel"] or default_channel)
        row = dict(rec)
        row.update(
            window_start=start,
            window_end=_ts(rec["window_end"]) if pd.notna(rec["window_end"]) else start + dt.timedelta(minutes=minutes),
            detected_at=_ts(rec["detected_at"]) if pd.notna(rec["detected_at"]) else detected_at,
            delivery_attempts=to_int(rec["delivery_attempts"]) + 1,
            sample=json.dumps(sample, ensure_ascii=False),
        )
        channel = rec["channel"] or default_channel
        if delivery.delivered:
            row.update(alert_status=R.STATUS_SENT, alerted_at=clock(), last_error=None)
            result.alerts_sent += 1
            say(f"alert sent: {key[0]} {start:%Y-%m-%d %H:%M} UTC to {delivery.destination}")
        elif R.give_up_on_alert(row["delivery_attempts"], getattr(delivery, "permanent", False)):
            row.update(alert_status=R.STATUS_FAILED, alerted_at=None, last_error=str(delivery.error)[:500])
            result.alerts_failed += 1
            result.delivery_errors.append(f"{key[0]} {start:%Y-%m-%d %H:%M}: {delivery.error} (failed)")
            say(f"alert FAILED for good after {row['delivery_attempts']} attempts: {key[0]} {start:%Y-%m-%d %H:%M} UTC: {delivery.error}")
        else:
            row.update(alert_status=R.STATUS_PENDING, alerted_at=None, last_error=str(delivery.error)[:500])
            result.alerts_pending += 1
            result.delivery_errors.append(f"{key[0]} {start:%Y-%m-%d %H:%M}: {delivery.error}")
            say(f"alert NOT delivered (stays pending): {key[0]} {start:%Y-%m-%d %H:%M} UTC: {delivery.error}")
        # Recorded at once, alert by alert: a crash or a run retry after Slack accepted a
        # message never posts it again.
        _load_anomalies(warehouse, dataset, [row], mode="merge", preserve_on_update=("detected_at",))
        if row["alert_status"] == R.STATUS_FAILED:
            notice = R.failed_alert_notice(key[0], start, channel, str(delivery.error), row["delivery_attempts"],
                                           f"{dataset}.{ANOMALIES_TABLE}")
            if not slack.post_message(notice, channel=default_channel).delivered:
                say(f"the notice of the failed alert could not be posted to {default_channel} either")
