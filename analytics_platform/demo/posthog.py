"""Demo data of the posthog domain: PostHog events and sessions export plus Firebase users
and events in the local DuckDB warehouse, for the 7 days ending on the demo day.

Besides the random sessions (``synthetic.generate``; ~1 % of events without a
``$session_id``, ~10 % of users without a Firebase user row) it writes three hand-made
cases the docs talk about:

* ``demo-midnight``: starts 23:59 the day before the demo day, ends 00:10 on it; it
  belongs to the day before only;
* ``demo-no-firebase``: a session of ``demo-user-not-in-firebase`` (NULL Firebase user
  columns; its one Firebase event during the session is counted all the same), whose
  ``event_created`` event was exported twice (same uuid: counted once);
* two events without ``$session_id`` on the demo day (counted, never loaded).

Re-seeding drops and rewrites the four source tables, so it never accumulates rows.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from analytics_platform.common import UTC
from analytics_platform.demo import DemoContext, DemoStep
from analytics_platform.demo import posthog_synthetic as synthetic
from analytics_platform.posthog.tables import (
    EVENTS_TABLE,
    FIREBASE_EVENTS_SCHEMA,
    FIREBASE_USERS_SCHEMA,
    POSTHOG_EVENTS_SCHEMA,
    POSTHOG_SESSIONS_SCHEMA,
    USERS_TABLE,
)

DEMO_DAYS = 7
DEMO_SESSIONS = 300
DEMO_EVENTS = 3_000
DEMO_USERS = 60


def _at(day: dt.date, hh: int, mm: int, ss: int = 0) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=UTC))


def _edge_cases(ctx: DemoContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    day = ctx.demo_date
    before = day - dt.timedelta(days=1)

    def ev(uid: str, name: str, at: pd.Timestamp, user: str, session: str | None, **props) -> dict:
        if session:
            props["$session_id"] = session
        return {"uuid": uid, "event": name, "properties": json.dumps(props), "distinct_id": user,
                "team_id": 1, "timestamp": at}

    events = pd.DataFrame([
        ev("demo-m1", "$pageview", _at(before, 23, 59), "user-000001", "demo-midnight"),
        ev("demo-m2", "scroll", _at(day, 0, 4), "user-000001", "demo-midnight", touch_y=420, screen_height=840),
        ev("demo-m3", "quiz_completed", _at(day, 0, 10), "user-000001", "demo-midnight"),
        ev("demo-n1", "$pageview", _at(day, 9, 0), "demo-user-not-in-firebase", "demo-no-firebase"),
        ev("demo-n2", "event_created", _at(day, 9, 3), "demo-user-not-in-firebase", "demo-no-firebase"),
        # the batch export appended demo-n2 a second time (a retry): one event, not two
        ev("demo-n2", "event_created", _at(day, 9, 3), "demo-user-not-in-firebase", "demo-no-firebase"),
        ev("demo-x1", "$identify", _at(day, 8, 0), "user-000002", None),
        ev("demo-x2", "$pageview", _at(day, 8, 1), "user-000002", ""),
    ])
    sessions = pd.DataFrame([{
        "session_id": "demo-midnight", "distinct_id": "user-000001",
        "start_timestamp": _at(before, 23, 59), "end_timestamp": _at(day, 0, 10),
        "session_duration": 660, "entry_current_url": "https://app.example/quiz",
        "end_current_url": "https://app.example/home", "is_bounce": False, "channel_type": "Direct",
    }])
    return events, sessions


def seed(ctx: DemoContext) -> None:
    warehouse = ctx.resources["warehouse"]
    s = ctx.settings
    data = synthetic.generate(
        n_sessions=DEMO_SESSIONS,
        n_events=DEMO_EVENTS,
        first_day=ctx.demo_date - dt.timedelta(days=DEMO_DAYS - 1),
        n_days=DEMO_DAYS,
        n_users=DEMO_USERS,
        seed=ctx.rng("posthog").randrange(2**31),
    )
    extra_events, extra_sessions = _edge_cases(ctx)
    at = _at(ctx.demo_date, 9, 1)
    no_user_fb_event = pd.DataFrame([{
        "event_date": at.strftime("%Y%m%d"), "event_timestamp": int(at.value // 1000),
        "event_name": "screen_view", "user_id": "demo-user-not-in-firebase",
        "user_pseudo_id": "p-demo-user-not-in-firebase", "platform": "IOS",
    }])
    tables = [
        (s.posthog_dataset_id, EVENTS_TABLE, POSTHOG_EVENTS_SCHEMA,
         pd.concat([data.posthog_events, extra_events], ignore_index=True)),
        (s.posthog_dataset_id, "sessions", POSTHOG_SESSIONS_SCHEMA,
         pd.concat([data.posthog_sessions, extra_sessions], ignore_index=True)),
        (s.firebase_dataset_id, USERS_TABLE, FIREBASE_USERS_SCHEMA, data.firebase_users),
        (s.firebase_dataset_id, EVENTS_TABLE, FIREBASE_EVENTS_SCHEMA,
         pd.concat([data.firebase_events, no_user_fb_event], ignore_index=True)),
    ]
    for dataset, table, schema, frame in tables:
        if warehouse.table_exists(dataset, table):
            warehouse.execute(f"DROP TABLE `{dataset}.{table}`")
        warehouse.load(frame, dataset, table, schema)


NEVER_FRESH_2024 = (
    "the demo's days are in 2024: the check freshness fails as a WARN, never fresh on this instance (no alert)"
)


def steps(ctx: DemoContext) -> list[DemoStep]:
    first = (ctx.demo_date - dt.timedelta(days=DEMO_DAYS - 1)).isoformat()
    last = ctx.demo_date.isoformat()
    return [
        DemoStep(
            selection=["posthog_aggregated/sessions", "posthog_aggregated/persons"],
            partition_range=(first, last),
            description=f"sessions {first}..{last} as one run (a full load), then persons",
            planted=(NEVER_FRESH_2024,),
        )
    ]
