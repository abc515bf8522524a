"""Benchmark ``sessions``: the session aggregation as warehouse SQL (DuckDB, the platform's
``posthog_aggregated/sessions`` MERGE over every day in one statement) against the old
service's approach (pull the tables into pandas, parse ``properties`` with ``json.loads``,
``groupby`` the session metrics, merge Firebase events per user, write the result back).

    python -m benchmarks run sessions                        # 5M events, 200k sessions
    python -m benchmarks run sessions --scale 1000000 --baseline-scale 1000000

``scale`` is the number of PostHog events; sessions = scale / 25 (5M -> 200k), users =
sessions / 10, Firebase events = 2 per session, over 30 days.  Like PostHog's appending
batch export after retries, 1 % of the events are written a second time (same uuid, later
``bq_ingested_timestamp``): both variants count each uuid once.  Both variants read the same
DuckDB file and write the same table shape; the result of both is compared (``extra``).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from analytics_platform.posthog import rules as logic
from analytics_platform.posthog.store import build_sessions_merge_sql
from analytics_platform.demo import posthog_synthetic as synthetic
from analytics_platform.posthog.tables import (
    EVENTS_TABLE,
    FIREBASE_EVENTS_SCHEMA,
    FIREBASE_USERS_SCHEMA,
    POSTHOG_EVENTS_SCHEMA,
    POSTHOG_SESSIONS_SCHEMA,
    USERS_TABLE,
    sessions_schema,
)
from analytics_platform.resources.warehouse import DuckDBWarehouse
from benchmarks.harness import Measurement, measure

DEFAULT_SCALES = [5_000_000]
EVENTS_PER_SESSION = 25
N_DAYS = 30
DUPLICATE_FRACTION = 0.01  # events exported twice (same uuid)
FIRST_DAY = dt.date(2024, 5, 1)
PH, FB, OUT = "posthog_etl", "firebase_etl_prod", "posthog_aggregated"
BASELINE_OUT = "baseline_aggregated"


def _seed(warehouse: DuckDBWarehouse, scale: int) -> int:
    n_sessions = max(1, scale // EVENTS_PER_SESSION)
    data = synthetic.generate(
        n_sessions=n_sessions,
        n_events=scale,
        first_day=FIRST_DAY,
        n_days=N_DAYS,
        n_users=max(1, n_sessions // 10),
        seed=7,
    )
    events = data.posthog_events
    events["bq_ingested_timestamp"] = events["timestamp"] + pd.Timedelta(minutes=5)
    copies = events.sample(frac=DUPLICATE_FRACTION, random_state=7).copy()
    copies["bq_ingested_timestamp"] = copies["timestamp"] + pd.Timedelta(hours=1)
    warehouse.load(pd.concat([events, copies], ignore_index=True), PH, EVENTS_TABLE, POSTHOG_EVENTS_SCHEMA)
    del events, copies
    warehouse.load(data.posthog_sessions, PH, "sessions", POSTHOG_SESSIONS_SCHEMA)
    warehouse.load(data.firebase_users, FB, USERS_TABLE, FIREBASE_USERS_SCHEMA)
    warehouse.load(data.firebase_events, FB, EVENTS_TABLE, FIREBASE_EVENTS_SCHEMA)
    del data
    gc.collect()
    return n_sessions


def _window() -> logic.RunWindow:
    # the seeded sessions start within N_DAYS and last <= 4 h: one extra day covers them
    return logic.RunWindow(FIRST_DAY, FIRST_DAY + dt.timedelta(days=N_DAYS), 1)


def run_platform(warehouse: DuckDBWarehouse) -> int:
    """Exactly what the asset runs for a one-run full load: one MERGE in the warehouse."""
    plan = logic.plan_carry(warehouse.table_columns(PH, "sessions"))
    warehouse.ensure_table(OUT, "sessions", sessions_schema(plan))
    properties_type = warehouse.column_types(PH, EVENTS_TABLE).get("properties", "JSON")
    sql = build_sessions_merge_sql(
        plan, posthog_dataset=PH, firebase_dataset=FB, out_dataset=OUT, properties_type=properties_type
    )
    params = _window().params(logic.DEFAULT_EVENT_NAMES, dt.datetime.now(dt.timezone.utc))
    return warehouse.execute(sql, params)


def _depth(props: dict) -> float:
    try:
        y, h = float(props["touch_y"]), float(props["screen_height"])
    except (KeyError, TypeError, ValueError):
        return np.nan
    if not (np.isfinite(y) and np.isfinite(h)) or h <= 0:
        return np.nan
    return min(max(y / h, 0.0), 1.0)


def run_baseline(warehouse: DuckDBWarehouse) -> int:
    """The old service's way: whole tables into pandas, Python JSON parsing, groupby."""
    w = _window()
    names = logic.DEFAULT_EVENT_NAMES
    events = warehouse.query(
        f"SELECT uuid, distinct_id, event, properties, `timestamp`, bq_ingested_timestamp FROM `{PH}.events` "
        "WHERE `timestamp` >= @a AND `timestamp` < @b",
        {"a": w.read_start, "b": w.read_end},
    )
    # each uuid once: the latest export of it
    events = events.sort_values("bq_ingested_timestamp", ascending=False, na_position="last")
    events = events[events["uuid"].isna() | ~events["uuid"].duplicated()].reset_index(drop=True)
    users = warehouse.query(f"SELECT user_id, created_at, country FROM `{FB}.users`")
    fb_events = warehouse.query(f"SELECT user_id, event_timestamp FROM `{FB}.events`")
    export = warehouse.query(f"SELECT * FROM `{PH}.sessions`")

    props = events["properties"].map(json.loads)
    events["session_id"] = props.map(lambda p: p.get("$session_id"))
    events = events[events["session_id"].notna() & (events["session_id"] != "")]
    props = props.loc[events.index]
    is_scroll = events["event"] == names["scroll_event"]
    events["depth"] = np.nan
    events.loc[is_scroll, "depth"] = props[is_scroll].map(_depth)
    for col, name in (
        ("pageview_count", "$pageview"), ("screen_count", "$screen"), ("autocapture_count", "$autocapture"),
        ("events_created_count", names["event_created_event"]), ("quiz_started_count", names["quiz_started_event"]),
        ("quiz_completed_count", names["quiz_completed_event"]), ("scroll_event_count", names["scroll_event"]),
    ):
        events[col] = (events["event"] == name).astype("int64")
    events = events.sort_values(["session_id", "timestamp", "distinct_id"])
    g = events.groupby("session_id", sort=False)
    sessions = g.agg(
        distinct_id=("distinct_id", "last"),
        session_start=("timestamp", "min"),
        session_end=("timestamp", "max"),
        event_count=("event", "size"),
        pageview_count=("pageview_count", "sum"),
        screen_count=("screen_count", "sum"),
        autocapture_count=("autocapture_count", "sum"),
        events_created_count=("events_created_count", "sum"),
        quiz_started_count=("quiz_started_count", "sum"),
        quiz_completed_count=("quiz_completed_count", "sum"),
        scroll_event_count=("scroll_event_count", "sum"),
        max_scroll_depth=("depth", "max"),
    ).reset_index()
    sessions = sessions[(sessions["session_start"] >= w.range_start) & (sessions["session_start"] < w.range_end)]
    sessions["session_date"] = sessions["session_start"].dt.date
    sessions["duration_seconds"] = (sessions["session_end"] - sessions["session_start"]).dt.total_seconds()

    users = users.sort_values(["user_id", "created_at"]).drop_duplicates("user_id")
    sessions = sessions.merge(users.rename(columns={"created_at": "user_created_at"}), how="left",
                              left_on="distinct_id", right_on="user_id")
    sessions = sessions.rename(columns={"user_id": "firebase_user_id"})
    # Firebase events of the same user inside [start, end]: merge per user, then filter
    s_us = sessions[["session_id", "distinct_id", "session_start", "session_end"]].copy()
    epoch, one_us = pd.Timestamp(0, tz="UTC"), pd.Timedelta(microseconds=1)
    s_us["a"] = (s_us["session_start"] - epoch) // one_us
    s_us["b"] = (s_us["session_end"] - epoch) // one_us
    joined = s_us.merge(fb_events, left_on="distinct_id", right_on="user_id")
    joined = joined[(joined["event_timestamp"] >= joined["a"]) & (joined["event_timestamp"] <= joined["b"])]
    counts = joined.groupby("session_id").size().rename("firebase_event_count")
    sessions = sessions.merge(counts, how="left", left_on="session_id", right_index=True)
    # counted whether or not the user has a Firebase users row
    sessions["firebase_event_count"] = sessions["firebase_event_count"].fillna(0)
    export = export.sort_values(["session_id", "end_timestamp"]).drop_duplicates("session_id", keep="last")
    carry = [c for c in export.columns if c in logic.CARRY_COLUMNS or c.startswith(logic.CARRY_PREFIXES)]
    sessions = sessions.merge(export[["session_id", *carry]], how="left", on="session_id")
    sessions["_loaded_at"] = pd.Timestamp.now(tz="UTC")

    plan = logic.plan_carry(list(export.columns))
    result = warehouse.load(
        sessions, BASELINE_OUT, "sessions", sessions_schema(plan), mode="replace_partitions",
        partition_column="session_date", partition_values=w.days,
    )
    return result.rows_staged


def _summary(warehouse: DuckDBWarehouse, dataset: str) -> dict:
    row = warehouse.query(
        f"SELECT COUNT(*) AS sessions, SUM(event_count) AS events, "
        f"SUM(COALESCE(firebase_event_count, 0)) AS firebase_events, "
        f"ROUND(SUM(COALESCE(max_scroll_depth, 0)), 6) AS depth_sum, "
        f"SUM(quiz_completed_count) AS quiz_completed, COUNT(firebase_user_id) AS with_user "
        f"FROM `{dataset}.sessions`"
    ).iloc[0]
    return {k: float(v) for k, v in row.items()}


def run(scale: int, workdir: Path, baseline_scale: Optional[int] = None) -> list[Measurement]:
    results: list[Measurement] = []
    warehouse = DuckDBWarehouse(path=str(workdir / "sessions.duckdb"))
    n_sessions = _seed(warehouse, scale)
    with measure("sessions", "platform", scale, "events") as m:
        rows = run_platform(warehouse)
    m.extra.update({"sessions": n_sessions, "rows_written": rows, "engine": "duckdb"})
    results.append(m)
    platform_summary = _summary(warehouse, OUT)
    gc.collect()

    base_scale = baseline_scale or scale
    base_wh = warehouse
    if base_scale != scale:
        base_wh = DuckDBWarehouse(path=str(workdir / "baseline.duckdb"))
        _seed(base_wh, base_scale)
    with measure("sessions", "baseline", base_scale, "events") as b:
        rows = run_baseline(base_wh)
    b.extra.update({"sessions": rows, "approach": "pandas groupby + json.loads (old service)"})
    if base_scale != scale:
        factor = scale / base_scale
        b.extra["extrapolated_from"] = base_scale
        b.extra["note"] = f"baseline ran at {base_scale:,} events; wall time extrapolated linearly x{factor:g}"
        b.wall_seconds *= factor
        b.scale = scale
    else:
        b.extra["results_match"] = _summary(base_wh, BASELINE_OUT) == platform_summary
        b.extra["summary"] = platform_summary
    results.append(b)
    return results
