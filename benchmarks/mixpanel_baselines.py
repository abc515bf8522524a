"""The comparison variants of ``bench_mixpanel_ingest`` (straightforward code, one pass).

* :func:`batched_load` — the export streamed with ``requests`` (``iter_lines`` in 1 MiB
  chunks), one ``loads`` per line, the columns built in Python lists, one Arrow batch of
  200k rows inserted with the platform's own statement (``insert_new_events.sql`` through
  ``Warehouse.insert_from_batch``: same table, same "not loaded yet" join, first
  occurrence kept inside a batch with a dict).  ``loads``/``dumps`` are ``json``'s (the
  "fair batched baseline") or ``orjson``'s (the "best straightforward" one).
* :func:`parse_only` — ``orjson.loads`` over every line of the same (decompressed) export
  file, nothing kept: the parse limit a Python-side ingester cannot beat.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import requests

# imported here, not inside the timed function (the store module imports Dagster)
from analytics_platform.mixpanel.store import EVENTS_BATCH_SCHEMA
from analytics_platform.mixpanel.tables import ensure_events_table

BATCH_ROWS = 200_000
MS_THRESHOLD = 100_000_000_000
_EPOCH = dt.date(1970, 1, 1)


def json_codec() -> tuple[Callable[[bytes], Any], Callable[[Any], str]]:
    return json.loads, lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def orjson_codec() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    return orjson.loads, orjson.dumps


def batched_load(
    *,
    url: str,
    warehouse: Any,
    dataset: str,
    table: str,
    day: dt.date,
    events: Sequence[str],
    loads: Callable[[bytes], Any],
    dumps: Callable[[Any], Any],
    inserted_at: dt.datetime,
    batch_rows: int = BATCH_ROWS,
) -> dict[str, int]:
    """Stream the day's export into ``dataset.table``; return counts."""

    ensure_events_table(warehouse, dataset, table)
    counts = {"lines": 0, "duplicates_in_batch": 0, "rows_inserted": 0}
    inserted_us = int((inserted_at - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() * 1_000_000)
    day_number = (day - _EPOCH).days
    batch: dict[str, tuple] = {}

    def flush() -> None:
        if not batch:
            return
        rows = list(batch.values())
        batch.clear()
        ids, names, users, micros, props, devices, oses, processing = zip(*rows)
        ts = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        dates = pa.array([m // 86_400_000_000 for m in micros], pa.int32()).cast(pa.date32())
        arrow = pa.table(
            {
                "event_id": pa.array(ids, pa.string()),
                "event_name": pa.array(names, pa.string()),
                "distinct_id": pa.array(users, pa.string()),
                "event_timestamp": ts,
                "inserted_at": pa.array([inserted_us] * len(rows), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "properties": pa.array(props, pa.string()),
                "event_date": dates,
                "device_id": pa.array(devices, pa.string()),
                "os": pa.array(oses, pa.string()),
                "mp_processing_time_ms": pa.array(processing, pa.int64()),
            }
        )
        arrow = arrow.filter(pc.equal(arrow.column("event_date").cast(pa.int32()), day_number))
        counts["rows_inserted"] += warehouse.insert_from_batch(
            "mixpanel/insert_new_events", arrow, EVENTS_BATCH_SCHEMA,
            # every id looked up in the table, as a straightforward loader does
            {"date_from": day, "date_to": day, "slice_from": day, "slice_to": day, "rows_expected": -1},
            batch_dataset=dataset, dataset=dataset, table=table,
        )

    with requests.get(
        f"{url}/api/2.0/export",
        params={"from_date": day.isoformat(), "to_date": day.isoformat(), "event": json.dumps(list(events))},
        headers={"Accept-Encoding": "gzip"}, stream=True, timeout=600,
    ) as response:
        response.raise_for_status()
        for raw in response.iter_lines(chunk_size=1 << 20):
            if not raw:
                continue
            counts["lines"] += 1
            record = loads(raw)
            p = record["properties"]
            event_id = p.get("$insert_id")
            if event_id in batch:
                counts["duplicates_in_batch"] += 1
                continue
            t = p["time"]
            micros = round(t * 1000) if t >= MS_THRESHOLD else round(t * 1_000_000)
            processing = p.get("mp_processing_time_ms")
            text = dumps(p)
            batch[event_id] = (
                event_id, record["event"], p.get("distinct_id"), micros,
                text.decode() if isinstance(text, bytes) else text,
                p.get("$device_id"), p.get("$os") or p.get("mp_os"),
                int(processing) if processing is not None else None,
            )
            if len(batch) >= batch_rows:
                flush()
        flush()
    return counts


def parse_only(path: Path) -> int:
    """``orjson.loads`` of every non-blank line of ``path``; returns the lines parsed."""
    n = 0
    loads = orjson.loads
    with open(path, "rb", buffering=1 << 20) as handle:
        for line in handle:
            if line != b"\n":
                loads(line)
                n += 1
    return n
