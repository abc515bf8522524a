"""A small hand-made PostHog + Firebase data set and helpers for the posthog tests.

Every expected value in the tests is computed by hand from the rows written here.

Day D = 2024-06-03 (UTC).

S1  anon-1 then u1 (Firebase user, DE)  10:00:00 .. 10:15:30.5 on D
S2  u2 (Firebase user, US)              D 23:59:00 .. D+1 00:10:00  (spans midnight)
S3  u3 (NOT in Firebase users)          D 12:00:00 .. 12:00:05
S0  u1                                  D-1 23:50:00 .. D 00:20:00  (belongs to D-1)
S4  u1                                  D+1 09:00:00 (single event)
plus 2 events without $session_id on D and 1 on D+1.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Optional

import dagster as dg
import pandas as pd

from analytics_platform.posthog.assets import SOURCE_SPECS, persons, sessions
from analytics_platform.posthog.tables import (
    FIREBASE_EVENT_PARAMS_DDL,
    FIREBASE_EVENTS_SCHEMA,
    FIREBASE_USERS_SCHEMA,
    POSTHOG_EVENTS_SCHEMA,
    POSTHOG_SESSIONS_SCHEMA,
)
from analytics_platform.resources.warehouse import Column, Warehouse

UTC = dt.timezone.utc
D = dt.date(2024, 6, 3)
PH, FB, OUT = "posthog_etl", "firebase_etl_prod", "posthog_aggregated"


def ts(text: str) -> dt.datetime:
    """'2024-06-03 10:00:00.5' -> aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def micros(text: str) -> int:
    t = ts(text)
    return int((t - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))


def ev(uuid: str, event: str, when: str, distinct_id: str, session: Optional[str], **props: Any) -> dict:
    properties = dict(props)
    if session is not None:
        properties["$session_id"] = session
    return {
        "uuid": uuid,
        "event": event,
        "properties": json.dumps(properties),
        "distinct_id": distinct_id,
        "team_id": 1,
        "timestamp": ts(when),
        "ip": "203.0.113.1",
        "bq_ingested_timestamp": ts(when) + dt.timedelta(minutes=5),
    }


POSTHOG_EVENTS = [
    # S1: anonymous first, then identified as u1; the latest event's distinct_id wins
    ev("e01", "$pageview", "2024-06-03 10:00:00", "anon-1", "S1"),
    ev("e02", "$screen", "2024-06-03 10:00:30", "u1", "S1"),
    ev("e03", "event_created", "2024-06-03 10:01:00", "u1", "S1"),
    ev("e04", "scroll", "2024-06-03 10:02:00", "u1", "S1", touch_y=300, screen_height=800),  # 0.375
    ev("e05", "scroll", "2024-06-03 10:03:00", "u1", "S1", touch_y="600", screen_height=800),  # 0.75
    ev("e06", "scroll", "2024-06-03 10:04:00", "u1", "S1", screen_height=800),  # no touch_y: unusable
    ev("e07", "quiz_started", "2024-06-03 10:05:00", "u1", "S1"),
    ev("e08", "$autocapture", "2024-06-03 10:06:00", "u1", "S1"),
    ev("e09", "$autocapture", "2024-06-03 10:07:00", "u1", "S1"),
    ev("e10", "event_created", "2024-06-03 10:08:00", "u1", "S1"),
    ev("e11", "quiz_completed", "2024-06-03 10:15:30.5", "u1", "S1"),
    # S2: 23:59 -> 00:10 across midnight
    ev("e20", "$pageview", "2024-06-03 23:59:00", "u2", "S2"),
    ev("e21", "scroll", "2024-06-04 00:05:00", "u2", "S2", touch_y=-50, screen_height=700),  # clamps to 0
    ev("e22", "scroll", "2024-06-04 00:06:00", "u2", "S2", touch_y=2000, screen_height="700"),  # clamps to 1
    ev("e23", "$screen", "2024-06-04 00:10:00", "u2", "S2"),
    # S3: user missing in Firebase; scroll with screen_height 0 is unusable
    ev("e30", "$pageview", "2024-06-03 12:00:00", "u3", "S3"),
    ev("e31", "scroll", "2024-06-03 12:00:05", "u3", "S3", touch_y=100, screen_height=0),
    # S0: starts the day before D, ends on D -> belongs to D-1 only
    ev("e40", "$pageview", "2024-06-02 23:50:00", "u1", "S0"),
    ev("e41", "quiz_completed", "2024-06-03 00:20:00", "u1", "S0"),
    # S4: next day
    ev("e50", "$pageview", "2024-06-04 09:00:00", "u1", "S4"),
    # events without $session_id: never sessions
    ev("n01", "$pageview", "2024-06-03 08:00:00", "u1", None),
    ev("n02", "$identify", "2024-06-03 09:00:00", "u2", ""),
    ev("n03", "$pageview", "2024-06-04 08:00:00", "u2", None),
]

FIREBASE_USERS = [
    {"user_id": "u1", "created_at": ts("2024-05-01 10:00:00"), "platform": "ios", "country": "DE", "properties": "{}"},
    {"user_id": "u2", "created_at": ts("2024-05-02 11:30:00"), "platform": "android", "country": "US", "properties": "{}"},
]


def fe(user: str, when: str, name: str = "screen_view") -> dict:
    return {
        "event_date": ts(when).strftime("%Y%m%d"),
        "event_timestamp": micros(when),
        "event_name": name,
        "user_id": user,
        "user_pseudo_id": f"p-{user}",
        "platform": "IOS",
    }


FIREBASE_EVENTS = [
    fe("u1", "2024-06-03 10:00:00"),  # == S1 start: counted
    fe("u1", "2024-06-03 10:07:30"),  # inside S1: counted
    fe("u1", "2024-06-03 10:15:30.5"),  # == S1 end: counted
    fe("u1", "2024-06-03 10:15:30.500001"),  # 1 µs after S1 end: not counted
    fe("u1", "2024-06-03 09:59:59.999999"),  # 1 µs before S1 start: not counted
    fe("u2", "2024-06-03 10:05:00"),  # other user during S1: not counted for S1
    fe("u2", "2024-06-04 00:01:00"),  # inside S2 (after midnight): counted
    fe("u2", "2024-06-03 23:58:59"),  # before S2: not counted
    fe("u3", "2024-06-03 12:00:01"),  # u3 has events but no Firebase user row
    fe("u1", "2024-06-04 09:00:00"),  # == S4 start and end: counted for S4
]

SESSIONS_EXPORT = [
    {  # an older export version of S1: must be ignored in favour of the latest
        "session_id": "S1", "distinct_id": "u1", "start_timestamp": ts("2024-06-03 10:00:00"),
        "end_timestamp": ts("2024-06-03 10:05:00"), "entry_current_url": "https://app.example/old",
        "is_bounce": True, "channel_type": "Unknown", "entry_utm_source": "old",
    },
    {
        "session_id": "S1", "distinct_id": "u1", "start_timestamp": ts("2024-06-03 10:00:00"),
        "end_timestamp": ts("2024-06-03 10:15:30.5"), "session_duration": 930,
        "entry_current_url": "https://app.example/home", "is_bounce": False,
        "channel_type": "Direct", "entry_utm_source": "newsletter",
        "entry_utm_campaign": "june", "weird_new_column": "whatever",
    },
    {
        "session_id": "S2", "distinct_id": "u2", "start_timestamp": ts("2024-06-03 23:59:00"),
        "end_timestamp": ts("2024-06-04 00:10:00"), "entry_current_url": "https://app.example/quiz",
        "is_bounce": False, "channel_type": "Organic Search", "weird_new_column": "x",
    },
]

# The export as an older/newer PostHog version writes it: no end_current_url,
# entry_utm_medium, an unknown extra column and an extra entry_utm_* column.
SESSIONS_EXPORT_SCHEMA = [
    c for c in POSTHOG_SESSIONS_SCHEMA if c.name not in ("end_current_url", "entry_utm_medium")
] + [Column("weird_new_column", "STRING"), Column("entry_utm_id", "STRING")]


def load_sources(
    warehouse: Warehouse,
    *,
    properties_type: str = "JSON",
    with_export: bool = True,
    events: Optional[list[dict]] = None,
    ph: str = PH,
    fb: str = FB,
) -> None:
    """Write the hand-made source tables (Firebase events with a REPEATED event_params)."""
    ev_schema = [Column(c.name, properties_type) if c.name == "properties" else c for c in POSTHOG_EVENTS_SCHEMA]
    warehouse.load(pd.DataFrame(events or POSTHOG_EVENTS), ph, "events", ev_schema)
    if with_export:
        warehouse.load(pd.DataFrame(SESSIONS_EXPORT), ph, "sessions", SESSIONS_EXPORT_SCHEMA)
    warehouse.load(pd.DataFrame(FIREBASE_USERS), fb, "users", FIREBASE_USERS_SCHEMA)
    # Firebase's export shape: event_params is a REPEATED RECORD (created by DDL)
    warehouse.ensure_dataset(fb)
    cols = ", ".join(f"`{c.name}` {c.type}" for c in FIREBASE_EVENTS_SCHEMA)
    warehouse.execute(
        f"CREATE TABLE `{fb}.events` ({cols}, `event_params` {FIREBASE_EVENT_PARAMS_DDL})"
    )
    warehouse.load(pd.DataFrame(FIREBASE_EVENTS), fb, "events", FIREBASE_EVENTS_SCHEMA)


def add_posthog_events(warehouse: Warehouse, rows: list[dict], properties_type: str = "JSON") -> None:
    ev_schema = [Column(c.name, properties_type) if c.name == "properties" else c for c in POSTHOG_EVENTS_SCHEMA]
    warehouse.load(pd.DataFrame(rows), PH, "events", ev_schema)


def materialize(
    warehouse: Warehouse,
    *,
    partition: Optional[str] = None,
    partition_range: Optional[tuple[str, str]] = None,
    config: Optional[dict] = None,
    with_persons: bool = False,
    tags: Optional[dict] = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialize sessions (and optionally persons) like Dagster would for a run."""
    run_tags = dict(tags or {})
    if partition_range:
        run_tags["dagster/asset_partition_range_start"] = partition_range[0]
        run_tags["dagster/asset_partition_range_end"] = partition_range[1]
    selection = [sessions, persons] if with_persons else [sessions]
    run_config = None
    if config:
        run_config = {"ops": {"posthog_aggregated__sessions": {"config": config}}}
    return dg.materialize(
        [*SOURCE_SPECS, sessions, persons],
        selection=dg.AssetSelection.assets(*selection),
        partition_key=partition,
        run_config=run_config,
        resources={"warehouse": warehouse},
        tags=run_tags,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def read_sessions(warehouse: Warehouse, day: Optional[dt.date] = None, out: str = OUT) -> pd.DataFrame:
    where = "WHERE session_date = @d" if day else ""
    df = warehouse.query(
        f"SELECT * FROM `{out}.sessions` {where} ORDER BY session_id", {"d": day} if day else None
    )
    return df.reset_index(drop=True)


def rows_by_id(df: pd.DataFrame) -> dict[str, dict]:
    return {r["session_id"]: r for r in df.to_dict("records")}


def metadata_of(result: dg.ExecuteInProcessResult, key: str = "posthog_aggregated/sessions") -> list[dict]:
    out = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == key:
            out.append({"partition": mat.partition, **{k: getattr(v, "value", v) for k, v in mat.metadata.items()}})
    return out
