"""The worked example of docs/engagement.md, run as written."""

from __future__ import annotations

import datetime as dt

from analytics_platform.common import UTC
from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY
from analytics_platform.engagement.rules import MILESTONE_FLAGS
from analytics_platform.engagement.store import MILESTONES_TABLE, SIGNALS_TABLE
from analytics_platform_tests.engagement.conftest import (
    FIT_APP,
    GOAL_FITNESS,
    GOAL_SLEEP,
    NON_SERVICE_APP,
    SLEEP_APP,
    materialize,
)



def _ana(world):
    world.goal("ana", GOAL_FITNESS, tier=1)
    world.goal("ana", GOAL_SLEEP, tier=2)
    world.event("ana", FIT_APP, dt.datetime(2024, 5, 16, tzinfo=UTC), fg=50_000, session="a")
    world.event("ana", FIT_APP, dt.datetime(2024, 5, 25, 18, tzinfo=UTC), fg=30_000, session="b")
    world.event("ana", FIT_APP, dt.datetime(2024, 5, 29, 23, 59, 59, 999_000, tzinfo=UTC), fg=20_000, session="c")
    world.event("ana", NON_SERVICE_APP, dt.datetime(2024, 6, 2, 7, tzinfo=UTC), fg=900_000, session="d")
    world.event("ana", SLEEP_APP, dt.datetime(2024, 6, 6, tzinfo=UTC), fg=300_000, session="e")


def test_worked_example(world):
    _ana(world)
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    s = world.rows(SIGNALS_TABLE)["ana"]
    a = world.aggregates()["ana"]
    m = world.rows(MILESTONES_TABLE)["ana"]
    assert (s["event_count"], s["service_event_count"], s["aligned_event_count"]) == (4, 3, 3)
    assert (a["f0"], a["f1"], a["f2"], a["f3"]) == (0, 50_000, 50_000, 0)
    assert (a["has_tier1_event"], a["has_tier2_event"]) == (True, False)
    assert s["customer_app_registration_completed"] is False
    assert s["customer_app_login_completed"] is False
    assert s["customer_app_engaged"] is False
    assert s["customer_app_engagement_dropoff"] is True
    assert s["customer_app_retained"] is False and s["customer_app_retained_dropoff"] is False
    assert m["goal_setting_complete"] is True and m["tier1_app_engagement_dropoff"] is True
    assert [f for f in MILESTONE_FLAGS if m[f]] == ["goal_setting_complete", "tier1_app_engagement_dropoff"]

    # "Had she opened the fitness app for 1 minute on 06-05 ..."
    world.event("ana", FIT_APP, dt.datetime(2024, 6, 5, 12, tzinfo=UTC), fg=60_000, session="f")
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    s = world.rows(SIGNALS_TABLE)["ana"]
    assert s["customer_app_login_completed"] is True
    assert s["customer_app_engagement_dropoff"] is False
    assert s["customer_app_engaged"] is True
