"""Issue 14 item 5: production-safe batch writes of ``mixpanel_events``, on the BigQuery
emulator and on DuckDB (``warehouse`` runs a test on both).

* a properties text BigQuery cannot parse exactly is quarantined by ``SAFE.PARSE_JSON``
  (reason ``warehouse_invalid_json``), counted, and the rest of the batch loads;
* the staging table of a batch is created with its expiry (a writer killed right after
  creating it leaves a table that expires by itself);
* two writers of the same day at the same time never duplicate a row (the write lock):
  on the emulator the two transactions run concurrently and the second is cancelled at
  its commit and retried; the race is real without the lock (shown on DuckDB: the
  emulator happens to run two single INSERT statements one after the other).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from analytics_platform.common import UTC
from analytics_platform.mixpanel.store import EVENTS_BATCH_SCHEMA, EventsLoader, WAREHOUSE_REJECT_REASON
from analytics_platform.resources.warehouse import STAGING_EXPIRY, WarehouseError
from analytics_platform.resources.warehouse.write_lock import (
    WRITE_LOCKS_TABLE,
    is_write_conflict,
)
from analytics_platform_tests.mixpanel.conftest import (
    DATASET,
    EVENTS_KEY,
    TABLE,
    events_rows,
    line,
    materialize_events,
    metadata_of,
    mp_event,
    rejected_rows,
    ts,
)

DAY = "2024-06-05"
# More digits than a 64-bit integer or a double hold: BigQuery's PARSE_JSON with
# wide_number_mode 'exact' refuses it (it could only store it rounded); the local parser
# (and DuckDB, which keeps the JSON text) accept it.
WIDE = "123456789012345678901234567890"
REPO = Path(__file__).resolve().parents[2]


def _wide_line() -> str:
    return (
        '{"event":"app_open","properties":{"time":1717581600,"distinct_id":"u9",'
        f'"$insert_id":"wide-1","order_total":{WIDE}}}}}'
    )


# --------------------------------------------------------------------------- (a) SAFE.PARSE_JSON
def test_a_line_bigquery_cannot_parse_is_quarantined_and_the_batch_loads(warehouse, mixpanel_stub, mixpanel):
    good = [line(mp_event("app_open", ts(f"2024-06-05T1{i}:00:00"), f"u{i}", f"ok-{i}")) for i in range(3)]
    mixpanel_stub.add_raw_lines(DAY, [good[0], _wide_line(), *good[1:]])
    result = materialize_events(warehouse, mixpanel, DAY)
    meta = metadata_of(result, EVENTS_KEY)
    ids = sorted(events_rows(warehouse)["event_id"])
    if warehouse.engine == "bigquery":
        assert ids == ["ok-0", "ok-1", "ok-2"]  # the batch loaded, without the bad line
        rejected = rejected_rows(warehouse)
        assert list(rejected["reason"]) == [WAREHOUSE_REJECT_REASON]
        assert str(rejected["partition_date"].iloc[0]) == DAY
        raw = rejected["raw_line"].iloc[0]
        assert WIDE in raw  # the number as received, not rounded
        assert json.loads(raw)["properties"]["$insert_id"] == "wide-1"
        assert meta["rows_rejected"] == 1
        assert meta["rejected_by_reason"] == {WAREHOUSE_REJECT_REASON: 1}
        assert meta["rejected_rows_new"] == 1
        assert meta["rows_inserted"] == 3
        assert meta["rows_already_loaded"] == 0
        # a re-run counts it again but quarantines it once
        again = metadata_of(materialize_events(warehouse, mixpanel, DAY), EVENTS_KEY)
        assert again["rows_rejected"] == 1 and again["rejected_rows_new"] == 0
        assert again["rows_inserted"] == 0 and again["rows_already_loaded"] == 3
        assert len(rejected_rows(warehouse)) == 1
    else:
        # DuckDB keeps the JSON text as received: nothing to reject, the number is exact
        assert ids == ["ok-0", "ok-1", "ok-2", "wide-1"]
        stored = warehouse.query(
            f"SELECT properties FROM `{DATASET}.{TABLE}` WHERE event_id = 'wide-1'"
        )["properties"].iloc[0]
        assert WIDE in (stored if isinstance(stored, str) else json.dumps(stored))
        assert meta["rows_rejected"] == 0


def test_safe_parse_json_is_null_exactly_for_unparsable_text(warehouse):
    """The warehouse function the statements rely on: NULL (not an error) for text that is
    not JSON, the value for JSON (on BigQuery also NULL for a number it cannot keep exact)."""
    texts = {"ok": '{"a": 1}', "broken": '{"a": ', "wide": '{"a": ' + WIDE + "}"}
    row = warehouse.query(
        "SELECT " + ", ".join(f"SAFE.PARSE_JSON(@{k}, wide_number_mode=>'exact') IS NULL AS {k}" for k in texts),
        texts,
    ).iloc[0]
    assert not bool(row["ok"])
    assert bool(row["broken"])
    assert bool(row["wide"]) is (warehouse.engine == "bigquery")


# --------------------------------------------------------------------------- (b) staging expiry
_DIE_AFTER_CREATE = r"""
import datetime as dt, os, signal, sys
import pyarrow as pa
from analytics_platform.resources.warehouse import BigQueryWarehouse
from analytics_platform.mixpanel.store import EVENTS_BATCH_SCHEMA

def die(self, *args, **kwargs):  # the process dies right after the staging table exists
    os.kill(os.getpid(), signal.SIGKILL)

BigQueryWarehouse._load_parquet = die
wh = BigQueryWarehouse(project=sys.argv[1], emulator_host=sys.argv[2])
wh.ensure_dataset("mixpanel_data")
now = dt.datetime(2024, 6, 5, 10, tzinfo=dt.timezone.utc)
batch = pa.table({c.name: pa.array([None], pa.string()) for c in EVENTS_BATCH_SCHEMA})
batch = batch.set_column(0, "event_id", pa.array(["x"]))
wh.write_batch(["mixpanel/count_unparsable_events"], batch, EVENTS_BATCH_SCHEMA, batch_dataset="mixpanel_data", lock="l")
"""


def test_a_writer_killed_after_staging_leaves_a_table_that_expires(bq_warehouse):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = dt.datetime.now(UTC)
    proc = subprocess.run(
        [sys.executable, "-c", _DIE_AFTER_CREATE, bq_warehouse.project, bq_warehouse.emulator_host],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed, no clean-up ran
    tables = [t.table_id for t in bq_warehouse.client.list_tables(f"{bq_warehouse.project}.mixpanel_data")]
    staged = [t for t in tables if t.startswith("_stage_batch_")]
    assert len(staged) == 1, tables
    table = bq_warehouse.client.get_table(f"{bq_warehouse.project}.mixpanel_data.{staged[0]}")
    assert table.expires is not None, "a staging table must be created with its expiry"
    assert before + STAGING_EXPIRY - dt.timedelta(minutes=1) <= table.expires <= dt.datetime.now(UTC) + STAGING_EXPIRY


def test_a_completed_write_leaves_no_staging_table(bq_warehouse):
    loader = EventsLoader(bq_warehouse, DATASET, TABLE, inserted_at=dt.datetime(2024, 6, 5, 12, tzinfo=UTC))
    assert loader.load_events(_events(dt.date(2024, 6, 5), 5)) == 5
    tables = [t.table_id for t in bq_warehouse.client.list_tables(f"{bq_warehouse.project}.{DATASET}")]
    assert not [t for t in tables if t.startswith("_stage_")], tables


# --------------------------------------------------------------------------- (c) concurrent writers
def _events(day: dt.date, count: int, prefix: str = "e") -> pa.Table:
    """A parsed batch (export_parse's columns) of ``count`` events on ``day``."""
    base = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    stamps = [base + dt.timedelta(seconds=i) for i in range(count)]
    return pa.table(
        {
            "event_id": [f"{prefix}-{day}-{i}" for i in range(count)],
            "event_name": ["app_open"] * count,
            "distinct_id": [f"u{i % 11}" for i in range(count)],
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "event_date": pa.array([day] * count, pa.date32()),
            "properties": [json.dumps({"time": int(s.timestamp()), "distinct_id": f"u{i % 11}"}) for i, s in enumerate(stamps)],
            "device_id": [None] * count,
            "os": ["iOS"] * count,
            "mp_processing_time_ms": pa.array([None] * count, pa.int64()),
        }
    )


def _race(write, rounds: int = 1) -> list:
    """Run ``write(i)`` in two threads released together; their results (or errors)."""
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = write(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def _counts(warehouse, day: dt.date) -> tuple[int, int]:
    row = warehouse.query(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM `{DATASET}.{TABLE}` WHERE event_date = @day",
        {"day": day},
    ).iloc[0]
    return int(row["n"]), int(row["d"])


def test_two_concurrent_writers_of_the_same_day_never_duplicate(warehouse):
    inserted_at = dt.datetime(2024, 6, 5, 12, tzinfo=UTC)
    loaders = [EventsLoader(warehouse, DATASET, TABLE, inserted_at=inserted_at) for _ in range(2)]
    for r, day in enumerate([dt.date(2024, 6, 5), dt.date(2024, 6, 6), dt.date(2024, 6, 7)]):
        batch = _events(day, 2000)
        results = _race(lambda i: loaders[i].load_events(batch))
        assert not [x for x in results if isinstance(x, Exception)], results
        assert sorted(results) == [0, 2000], results  # one writer inserted, the other found them
        assert _counts(warehouse, day) == (2000, 2000)
    locks = warehouse.query(f"SELECT lock_name FROM `{DATASET}.{WRITE_LOCKS_TABLE}`")
    assert set(locks["lock_name"]) == {f"{DATASET}.{TABLE}"}


def test_without_the_lock_the_same_race_duplicates_rows(duckdb_warehouse):
    """The harness above can fail: the unlocked single-statement insert (the previous write)
    duplicates rows under the same race on DuckDB."""
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA, ensure_events_table

    ensure_events_table(duckdb_warehouse, DATASET, TABLE)
    loader = EventsLoader(duckdb_warehouse, DATASET, TABLE, inserted_at=dt.datetime(2024, 6, 5, 12, tzinfo=UTC))
    duplicated = False
    for r in range(5):
        day = dt.date(2024, 7, 1) + dt.timedelta(days=r)
        rows = loader._rows(_events(day, 3000))
        _race(lambda i: duckdb_warehouse.insert_from_batch(
            "mixpanel/insert_new_events", rows, EVENTS_BATCH_SCHEMA,
            {"date_from": day, "date_to": day, "slice_from": day, "slice_to": day, "rows_expected": -1},
            batch_dataset=DATASET, dataset=DATASET, table=TABLE,
        ))
        n, distinct = _counts(duckdb_warehouse, day)
        if n > distinct:
            duplicated = True
            break
    assert duplicated, "the unlocked insert never raced: the concurrency test proves nothing"


def test_a_writer_waits_for_the_lock_holder_and_then_inserts_nothing_twice(duckdb_warehouse):
    """Deterministic interleaving: another transaction holds the lock (and inserted the
    rows, uncommitted); the writer is cancelled and retried until it commits, then finds
    every row present."""
    day = dt.date(2024, 6, 5)
    loader = EventsLoader(duckdb_warehouse, DATASET, TABLE, inserted_at=dt.datetime(2024, 6, 5, 12, tzinfo=UTC))
    loader.load_events(_events(day, 1, prefix="warm-up"))  # the lock's row exists
    batch = _events(day, 50)
    holder = duckdb.connect(duckdb_warehouse.path)
    holder.execute("BEGIN TRANSACTION")
    holder.execute(f'UPDATE "{DATASET}"."{WRITE_LOCKS_TABLE}" SET holder = \'other run\' WHERE lock_name = ?',
                   [f"{DATASET}.{TABLE}"])
    holder.register("other_rows", loader._rows(batch))
    holder.execute(f'INSERT INTO "{DATASET}"."{TABLE}" SELECT event_id, event_name, distinct_id, event_timestamp, '
                   f'inserted_at, properties::JSON, event_date, device_id, os, mp_processing_time_ms FROM other_rows')
    finished: dict = {}

    def write() -> None:
        finished["result"] = loader.load_events(batch)
        finished["at"] = time.monotonic()

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive(), "the writer did not wait for the lock holder"
    committed_at = time.monotonic()
    holder.execute("COMMIT")
    holder.close()
    thread.join(timeout=120)
    assert finished["at"] > committed_at
    assert finished["result"] == 0  # the holder's rows were there: nothing inserted twice
    assert _counts(duckdb_warehouse, day) == (51, 51)


def test_write_conflicts_are_recognised_on_both_engines():
    bigquery = WarehouseError(
        "BigQuery statement failed: 400 Transaction is aborted due to concurrent update against table "
        "p:mixpanel_data.warehouse_write_locks."
    )
    duck = WarehouseError("DuckDB batch write failed: TransactionContext Error: Conflict on update!")
    emulator = WarehouseError("BigQuery statement failed: 400 GET http://127.0.0.1:1/...: Failed to commit: "
                              "Failed to commit DuckLake transaction.")
    assert is_write_conflict(bigquery) and is_write_conflict(duck) and is_write_conflict(emulator)
    wrapped = WarehouseError("batch write ['mixpanel/insert_new_events']: x")
    wrapped.__cause__ = bigquery
    assert is_write_conflict(wrapped)
    assert not is_write_conflict(WarehouseError("400 Syntax error: Unexpected keyword"))


# ------------------------------------------------- a fresh day: only ids seen earlier looked up
def _flagged(batch: pa.Table, seen_earlier: list[bool]) -> pa.Table:
    return batch.append_column("seen_earlier_in_export", pa.array(seen_earlier))


def test_a_fresh_day_looks_up_only_ids_kept_from_an_earlier_batch(warehouse):
    day = dt.date(2024, 6, 8)
    loader = EventsLoader(warehouse, DATASET, TABLE, inserted_at=dt.datetime(2024, 6, 8, 12, tzinfo=UTC))
    first = _events(day, 30)
    assert loader.load_events(_flagged(first, [False] * 30), slice_days=(day, day), slice_rows_expected=0) == 30
    # the next batch repeats 10 ids of the first (the parser flags them) and brings 20 new ones
    again = _events(day, 10)
    new = _events(day, 20, prefix="n")
    second = pa.concat_tables([again, new])
    inserted = loader.load_events(_flagged(second, [True] * 10 + [False] * 20), slice_days=(day, day), slice_rows_expected=30)
    assert inserted == 20
    assert _counts(warehouse, day) == (50, 50)


def test_a_fresh_day_written_by_another_writer_meanwhile_looks_up_every_id(warehouse):
    """The shortcut holds only while the days hold exactly this export's rows: another
    writer's rows (a concurrent run) make the batch look every id up again."""
    day = dt.date(2024, 6, 9)
    inserted_at = dt.datetime(2024, 6, 9, 12, tzinfo=UTC)
    mine, other = (EventsLoader(warehouse, DATASET, TABLE, inserted_at=inserted_at) for _ in range(2))
    assert mine.load_events(_flagged(_events(day, 30), [False] * 30), slice_days=(day, day), slice_rows_expected=0) == 30
    assert other.load_events(_events(day, 15, prefix="n")) == 15  # n-0 .. n-14, from another run
    # this export's next batch holds n-0 .. n-19, never seen by its parser before (unflagged)
    batch = _flagged(_events(day, 20, prefix="n"), [False] * 20)
    assert mine.load_events(batch, slice_days=(day, day), slice_rows_expected=30) == 5
    assert _counts(warehouse, day) == (50, 50)


def test_two_concurrent_writers_of_a_fresh_day_never_duplicate(warehouse):
    """Both writers start on an empty day (each expects 0 rows); the write lock orders
    them, and the second one finds the first one's rows counted."""
    inserted_at = dt.datetime(2024, 6, 10, 12, tzinfo=UTC)
    loaders = [EventsLoader(warehouse, DATASET, TABLE, inserted_at=inserted_at) for _ in range(2)]
    day = dt.date(2024, 6, 10)
    batch = _flagged(_events(day, 2000), [False] * 2000)
    results = _race(lambda i: loaders[i].load_events(batch, slice_days=(day, day), slice_rows_expected=0))
    assert not [x for x in results if isinstance(x, Exception)], results
    assert sorted(results) == [0, 2000], results
    assert _counts(warehouse, day) == (2000, 2000)
