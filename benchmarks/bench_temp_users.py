"""Benchmark ``temp_users``: detection over N raw events (about 1 % cohort events) and the
Mixpanel marking of 100k temp users.

    python -m benchmarks run temp_users                       # 10M events
    python -m benchmarks run temp_users --scale 1000000 --baseline-scale 1000000

Detection
* platform: ``CohortStore.detect_and_insert`` on the local DuckDB warehouse — the one
  BigQuery-dialect query (``sql/cohorts/detect_temp_users.sql``, transpiled by sqlglot)
  plus the insert-if-absent of the temp users found.
* baseline: what a notebook does — pull the window's events into pandas, filter the two
  event names, parse ``properties``, sort by device and time and scan pairwise.  It runs on
  the same N events by default; with ``--baseline-scale`` it runs on fewer and is
  extrapolated linearly to N (stated in ``extra``).  Both variants are checked to find the
  same temp users.

Marking
* platform: the ``mixpanel/state_loss_temp_user_cohort`` asset (``dg.materialize``) marking
  100k unsynced users against the Mixpanel stub over real HTTP: 50 requests of 2000.
* baseline: the old service's loop — the same requests with its fixed 1 s sleep between
  batches — measured on 10k users and extrapolated linearly to 100k.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Optional

import pandas as pd

from benchmarks.harness import Measurement, measure

DEFAULT_SCALES = [10_000_000]
MARK_USERS = 100_000
MARK_BASELINE_USERS = 10_000
AS_OF = dt.datetime(2024, 6, 6, tzinfo=dt.timezone.utc)
SPAN_SECONDS = 3 * 86_400  # events over the 3 days before as_of (the window is the last 2)


def _settings(workdir: Path):
    from analytics_platform.settings import get_settings

    return get_settings({"ANALYTICS_DATA_DIR": str(workdir / "data")})


def build_events(path: Path, n: int) -> None:
    """N events in ``mixpanel_data.mixpanel_events``: 1 % cohort events (pairs on the same
    device, gaps 0–149 s, 80 % Android), the rest ordinary game events."""
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    wh = DuckDBWarehouse(path=str(path))
    wh.ensure_table("mixpanel_data", "mixpanel_events", EVENTS_SCHEMA)
    start = int(AS_OF.timestamp()) - SPAN_SECONDS
    with wh.connect() as con:
        con.execute(
            f"""
            INSERT INTO mixpanel_data.mixpanel_events
              (event_id, event_name, distinct_id, event_timestamp, inserted_at, properties, event_date)
            WITH base AS (
              SELECT
                i,
                i // 200 AS pair,
                i % 200 AS slot,
                {start} + CAST(floor((i // 200) * 200 * {SPAN_SECONDS} / {n}) AS BIGINT) AS pair_epoch
              FROM range({n}) AS t(i)
            ), ev AS (
              SELECT
                i,
                CASE slot WHEN 0 THEN 'impression_privacy'
                          WHEN 1 THEN 'impression_restore_user_state_by_device_id'
                          ELSE 'impression_game_started' END AS event_name,
                CASE slot WHEN 0 THEN 'tmp-' || pair
                          WHEN 1 THEN 'real-' || pair
                          ELSE 'user-' || (i % 50000) END AS distinct_id,
                CASE slot WHEN 0 THEN pair_epoch
                          WHEN 1 THEN pair_epoch + (pair % 150)
                          ELSE {start} + CAST(floor(i * {SPAN_SECONDS} / {n}) AS BIGINT) END AS epoch,
                CASE WHEN slot < 2 THEN 'dev-' || pair ELSE 'dev-u' || (i % 50000) END AS device,
                CASE WHEN pair % 5 = 0 THEN 'iOS' ELSE 'Android' END AS os
              FROM base
            )
            SELECT
              'e' || i,
              event_name,
              distinct_id,
              to_timestamp(epoch),
              to_timestamp(epoch),
              CAST(json_object('time', epoch, 'distinct_id', distinct_id, '$device_id', device,
                               'mp_os', os, '$insert_id', 'e' || i, 'level', i % 97) AS JSON),
              CAST(to_timestamp(epoch) AS DATE)
            FROM ev
            """
        )


def pandas_detection(path: Path, as_of: dt.datetime, lookback_days: int = 2) -> set[str]:
    """The notebook way: pull the window, then sort + pairwise scan in pandas/Python."""
    import duckdb

    start = as_of - dt.timedelta(days=lookback_days)
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        df = con.execute(
            "SELECT * FROM mixpanel_data.mixpanel_events WHERE event_timestamp >= ? AND event_timestamp <= ?",
            [start, as_of + dt.timedelta(seconds=120)],
        ).df()
    finally:
        con.close()
    df = df[df["event_name"].isin(["impression_privacy", "impression_restore_user_state_by_device_id"])].copy()
    props = df["properties"].map(json.loads)
    df["device"] = props.map(lambda p: p.get("$device_id") or p.get("device_id") or None)
    df["os"] = props.map(lambda p: p.get("mp_os") or p.get("$os"))
    df = df[df["device"].notna()].sort_values(["device", "event_timestamp"])
    found: set[str] = set()
    rows = list(df[["event_name", "distinct_id", "event_timestamp", "device", "os"]].itertuples(index=False))
    as_of_ts = pd.Timestamp(as_of)
    start_ts = pd.Timestamp(start)
    for k, p in enumerate(rows):
        if p.event_name != "impression_privacy" or p.os != "Android" or not p.distinct_id:
            continue
        if not (start_ts <= p.event_timestamp < as_of_ts):
            continue
        # restores at the same timestamp may sort before p: look back over equal timestamps
        j = k - 1
        while j >= 0 and rows[j].device == p.device and rows[j].event_timestamp == p.event_timestamp:
            if rows[j].event_name != "impression_privacy":
                found.add(p.distinct_id)
            j -= 1
        j = k + 1
        while j < len(rows) and rows[j].device == p.device:
            gap = (rows[j].event_timestamp - p.event_timestamp).total_seconds()
            if gap > 120:
                break
            if rows[j].event_name != "impression_privacy":
                found.add(p.distinct_id)
                break
            j += 1
    return found


def _detection(scale: int, workdir: Path, baseline_scale: Optional[int]) -> list[Measurement]:
    from analytics_platform.cohorts import rules as logic
    from analytics_platform.cohorts.store import CohortStore
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    out: list[Measurement] = []
    path = workdir / "events.duckdb"
    t0 = time.perf_counter()
    build_events(path, scale)
    build_s = time.perf_counter() - t0
    wh = DuckDBWarehouse(path=str(path))
    store = CohortStore(wh, _settings(workdir))
    store.ensure_tables()
    window = logic.detection_window(AS_OF, 2)
    with measure("temp_users_detection", "platform", scale, "events") as m:
        detection = store.detect_and_insert(window, detected_at=dt.datetime.now(dt.timezone.utc))
    t1 = time.perf_counter()
    store.detect(window)  # warm re-run: the query alone (every user now known)
    m.extra.update(
        detected=detection.detected,
        inserted=detection.inserted,
        query_only_rerun_seconds=round(time.perf_counter() - t1, 2),
        data_build_seconds=round(build_s, 1),
        load_average=os.getloadavg()[0],
    )
    out.append(m)

    bscale = min(scale, baseline_scale or scale)
    bpath = path
    if bscale != scale:
        bpath = workdir / "events_baseline.duckdb"
        build_events(bpath, bscale)
    with measure("temp_users_detection", "baseline", scale, "events") as b:
        found = pandas_detection(bpath, AS_OF)
    if bscale != scale:
        b.extra.update(
            measured_scale=bscale,
            measured_seconds=round(b.wall_seconds, 2),
            extrapolated="linear to scale",
        )
        b.wall_seconds = b.wall_seconds * scale / bscale
        # the same rule: compare with the platform at the baseline's scale
        small = DuckDBWarehouse(path=str(bpath))
        small_store = CohortStore(small, _settings(workdir))
        small_store.ensure_tables()
        expected = set(small_store.detect(window)["distinct_id"])
    else:
        expected = set(detection.candidates["distinct_id"])
    b.extra.update(detected=len(found), same_result_as_platform=found == expected)
    out.append(b)
    return out


def _marking(workdir: Path) -> list[Measurement]:
    import dagster as dg

    from analytics_platform.cohorts import tables as T
    from analytics_platform.cohorts.assets import state_loss_temp_user_cohort
    from analytics_platform.cohorts.rules import ENGAGE_BATCH_SIZE, chunked
    from analytics_platform.resources.mixpanel import MixpanelResource
    from analytics_platform.resources.warehouse import DuckDBWarehouse
    from analytics_platform_tests.stubs.mixpanel import MixpanelStub

    out: list[Measurement] = []
    wh = DuckDBWarehouse(path=str(workdir / "marking.duckdb"))
    ids = [f"tmp-{i:06d}" for i in range(MARK_USERS)]
    wh.load(
        pd.DataFrame({"distinct_id": ids, "detected_at": AS_OF}),
        "peerplay",
        T.TEMP_USERS_TABLE,
        T.TEMP_USERS_SCHEMA,
    )
    with MixpanelStub() as stub:
        mixpanel = MixpanelResource(**stub.resource_kwargs())
        with measure("temp_users_marking", "platform", MARK_USERS, "users") as m:
            result = dg.materialize(
                [state_loss_temp_user_cohort],
                resources={"warehouse": wh, "mixpanel": mixpanel},
            )
        meta = result.asset_materializations_for_node("mixpanel__state_loss_temp_user_cohort")[0].metadata
        m.extra.update(
            requests=len(stub.engage_requests),
            users_marked=meta["users_marked"].value,
            batches=meta["batches"].value,
            load_average=os.getloadavg()[0],
        )
        out.append(m)

        # the old service: one request per batch with a fixed 1 s sleep in between
        sample = ids[:MARK_BASELINE_USERS]
        with measure("temp_users_marking", "baseline", MARK_USERS, "users") as b:
            for k, batch in enumerate(chunked(sample, ENGAGE_BATCH_SIZE)):
                if k:
                    time.sleep(1.0)
                mixpanel.engage([mixpanel.set_update(i, {"state_loss_temp_user_cohort_marker": "x"}) for i in batch])
        b.extra.update(
            measured_scale=MARK_BASELINE_USERS,
            measured_seconds=round(b.wall_seconds, 2),
            extrapolated="linear to scale",
            requests=MARK_USERS // ENGAGE_BATCH_SIZE,
        )
        b.wall_seconds = b.wall_seconds * MARK_USERS / MARK_BASELINE_USERS
        out.append(b)
    return out


def run(scale: int, workdir: Path, baseline_scale: Optional[int] = None) -> list[Measurement]:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return _detection(scale, workdir, baseline_scale) + _marking(workdir)
