"""Acceptance 1: each signal at its boundary, through the real PostgreSQL aggregation and
the vectorised rules, materialized as Dagster runs them (partition 2024-06-05, so
T = 2024-06-06 00:00 UTC). One user per case; every expectation comes from the spec."""

from __future__ import annotations

import pytest

from analytics_platform.engagement.assets import SIGNALS_KEY
from analytics_platform.engagement.store import SIGNALS_TABLE
from analytics_platform_tests.engagement.conftest import (
    FIT_APP,
    FIT_APP_2,
    GOAL_FITNESS,
    MONEY_APP,
    MS,
    NON_SERVICE_APP,
    SLEEP_APP,
    T,
    WEEK,
    materialize,
    materialization_metadata,
)

HOUR = WEEK / 168


def _aligned_user(world, user: str) -> str:
    world.goal(user, GOAL_FITNESS, tier=1)
    return user


@pytest.fixture
def signals(world):
    """Build every case, materialize the partition once, return {user_id: row}."""
    w = world
    # --- registration: one event >= 240000 ms --------------------------------------
    w.event(_aligned_user(w, "reg_240000"), FIT_APP, T - 30 * WEEK, fg=240_000)  # long ago still counts
    w.event(_aligned_user(w, "reg_239999"), FIT_APP, T - HOUR, fg=239_999)
    # --- registration: >= 4 distinct sessions of ONE aligned app in week 0 ---------
    u = _aligned_user(w, "sessions_4")
    for i in range(4):
        w.event(u, FIT_APP, T - (i + 1) * HOUR, fg=10, session=f"s{i}")
    u = _aligned_user(w, "sessions_3")  # 3 distinct sessions, one of them twice
    for i, s in enumerate(["s0", "s1", "s2", "s2"]):
        w.event(u, FIT_APP, T - (i + 1) * HOUR, fg=10, session=s)
    u = _aligned_user(w, "sessions_2_apps")  # 4 sessions, but 2 + 2 over two aligned apps
    for i, (app, s) in enumerate([(FIT_APP, "a"), (FIT_APP, "b"), (FIT_APP_2, "c"), (FIT_APP_2, "d")]):
        w.event(u, app, T - (i + 1) * HOUR, fg=10, session=s)
    u = _aligned_user(w, "sessions_4_at_week_start")  # 4th session exactly at T - 7 days: week 0
    for i in range(3):
        w.event(u, FIT_APP, T - (i + 1) * HOUR, fg=10, session=f"s{i}")
    w.event(u, FIT_APP, T - WEEK, fg=10, session="s3")
    u = _aligned_user(w, "sessions_4th_in_week_1")  # 4th session 1 ms before T - 7 days: week 1
    for i in range(3):
        w.event(u, FIT_APP, T - (i + 1) * HOUR, fg=10, session=f"s{i}")
    w.event(u, FIT_APP, T - WEEK - MS, fg=10, session="s3")
    # --- login: one event >= 60000 ms ------------------------------------------------
    w.event(_aligned_user(w, "login_60000"), FIT_APP, T - 3 * WEEK, fg=60_000)
    w.event(_aligned_user(w, "login_59999"), FIT_APP, T - HOUR, fg=59_999)
    # --- an event at T is not counted (only timestamp < T) ----------------------------
    u = _aligned_user(w, "at_T")
    w.event(u, FIT_APP, T, fg=300_000, session="x")
    w.event(u, FIT_APP, T - MS, fg=5, session="y")
    # --- week boundary through the drop-off: only activity exactly at T - 7 days ------
    w.event(_aligned_user(w, "only_at_T_minus_7d"), FIT_APP, T - WEEK, fg=1000)  # week 0
    w.event(_aligned_user(w, "only_1ms_before_T_minus_7d"), FIT_APP, T - WEEK - MS, fg=1000)  # week 1
    # --- engaged: F_0, F_1, F_2 > 0 ----------------------------------------------------
    u = _aligned_user(w, "weeks_0_1_2")
    for k in range(3):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    u = _aligned_user(w, "weeks_0_1")
    for k in range(2):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    u = _aligned_user(w, "weeks_0_1_3")
    for k in (0, 1, 3):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    u = _aligned_user(w, "weeks_0_1_2_fg0_in_2")  # an event with 0 ms does not make a week active
    for k, fg in ((0, 100), (1, 100), (2, 0)):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=fg)
    # --- retained: F_0..F_8 > 0 (9 weeks) ------------------------------------------------
    u = _aligned_user(w, "weeks_0_to_8")
    for k in range(9):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    u = _aligned_user(w, "weeks_0_to_7")
    for k in range(8):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    # --- retained drop-off: F_1..F_9 > 0 and F_0 = 0 --------------------------------------
    u = _aligned_user(w, "weeks_1_to_9")
    for k in range(1, 10):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    u = _aligned_user(w, "weeks_1_to_8")
    for k in range(1, 9):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    u = _aligned_user(w, "weeks_1_to_9_and_0")  # active in week 0 too: no drop-off
    for k in range(0, 10):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    # the same 9 weeks, with week 9 ending exactly at its lower bound T - 70 days
    u = _aligned_user(w, "weeks_1_to_9_edge")
    for k in range(1, 9):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    w.event(u, FIT_APP, T - 10 * WEEK, fg=100)  # in week 9
    u = _aligned_user(w, "weeks_1_to_8_and_10")  # 1 ms past week 9 is week 10: not enough
    for k in range(1, 9):
        w.event(u, FIT_APP, T - k * WEEK - HOUR, fg=100)
    w.event(u, FIT_APP, T - 10 * WEEK - MS, fg=100)
    # --- events of non-aligned apps are ignored ------------------------------------------
    u = _aligned_user(w, "non_aligned")  # goal: fitness; uses the sleep and finance apps
    for k in range(10):
        w.event(u, SLEEP_APP, T - k * WEEK - HOUR, fg=300_000, session=f"s{k}")
    for i in range(5):
        w.event(u, MONEY_APP, T - (i + 1) * HOUR, fg=70_000, session=f"m{i}")
    w.event(u, NON_SERVICE_APP, T - HOUR, fg=300_000, session="g")
    u = _aligned_user(w, "non_service_only")
    for i in range(4):
        w.event(u, NON_SERVICE_APP, T - (i + 1) * HOUR, fg=250_000, session=f"g{i}")

    result = materialize(world.app_db, [SIGNALS_KEY])
    rows = world.rows(SIGNALS_TABLE)
    rows["_metadata"] = materialization_metadata(result, SIGNALS_KEY)
    return rows


def test_registration_by_foreground_time(signals):
    assert signals["reg_240000"]["customer_app_registration_completed"] is True
    assert signals["reg_239999"]["customer_app_registration_completed"] is False
    # 239999 ms is still a login (>= 60000)
    assert signals["reg_239999"]["customer_app_login_completed"] is True


def test_registration_by_distinct_sessions_in_week_0(signals):
    assert signals["sessions_4"]["customer_app_registration_completed"] is True
    assert signals["sessions_3"]["customer_app_registration_completed"] is False
    assert signals["sessions_2_apps"]["customer_app_registration_completed"] is False
    assert signals["sessions_4_at_week_start"]["customer_app_registration_completed"] is True
    assert signals["sessions_4th_in_week_1"]["customer_app_registration_completed"] is False


def test_login_threshold(signals):
    assert signals["login_60000"]["customer_app_login_completed"] is True
    assert signals["login_59999"]["customer_app_login_completed"] is False


def test_event_at_T_is_not_counted(signals):
    row = signals["at_T"]
    assert row["event_count"] == 1
    assert row["aligned_event_count"] == 1
    assert row["customer_app_registration_completed"] is False
    assert row["customer_app_login_completed"] is False
    assert row["customer_app_engagement_dropoff"] is False  # the event 1 ms before T is week 0


def test_week_0_includes_T_minus_7_days_exactly(signals):
    # only activity in week 0 -> no drop-off
    assert signals["only_at_T_minus_7d"]["customer_app_engagement_dropoff"] is False
    # 1 ms earlier is week 1 -> F_1 > 0, F_0 = 0 -> drop-off
    assert signals["only_1ms_before_T_minus_7d"]["customer_app_engagement_dropoff"] is True


def test_engaged_needs_three_consecutive_weeks(signals):
    assert signals["weeks_0_1_2"]["customer_app_engaged"] is True
    assert signals["weeks_0_1"]["customer_app_engaged"] is False
    assert signals["weeks_0_1_3"]["customer_app_engaged"] is False
    assert signals["weeks_0_1_2_fg0_in_2"]["customer_app_engaged"] is False
    assert signals["weeks_0_1_2"]["customer_app_retained"] is False


def test_retained_needs_nine_consecutive_weeks(signals):
    assert signals["weeks_0_to_8"]["customer_app_retained"] is True
    assert signals["weeks_0_to_8"]["customer_app_engaged"] is True
    assert signals["weeks_0_to_7"]["customer_app_retained"] is False
    assert signals["weeks_0_to_7"]["customer_app_engaged"] is True


def test_engagement_dropoff(signals):
    assert signals["weeks_1_to_8"]["customer_app_engagement_dropoff"] is True
    assert signals["weeks_0_1"]["customer_app_engagement_dropoff"] is False


def test_retention_dropoff(signals):
    assert signals["weeks_1_to_9"]["customer_app_retained_dropoff"] is True
    assert signals["weeks_1_to_9"]["customer_app_engagement_dropoff"] is True
    assert signals["weeks_1_to_9"]["customer_app_retained"] is False
    assert signals["weeks_1_to_8"]["customer_app_retained_dropoff"] is False
    assert signals["weeks_1_to_9_and_0"]["customer_app_retained_dropoff"] is False
    assert signals["weeks_1_to_9_and_0"]["customer_app_retained"] is True
    assert signals["weeks_1_to_9_edge"]["customer_app_retained_dropoff"] is True
    assert signals["weeks_1_to_8_and_10"]["customer_app_retained_dropoff"] is False


def test_events_of_non_aligned_apps_are_ignored(signals):
    row = signals["non_aligned"]
    assert row["goal_setting_completed"] is True
    assert row["event_count"] == 16
    assert row["service_event_count"] == 15  # sleep + finance apps are service apps
    assert row["aligned_event_count"] == 0
    for flag in (
        "customer_app_registration_completed",
        "customer_app_login_completed",
        "customer_app_engaged",
        "customer_app_engagement_dropoff",
        "customer_app_retained",
        "customer_app_retained_dropoff",
    ):
        assert row[flag] is False, flag
    row = signals["non_service_only"]
    assert (row["event_count"], row["service_event_count"], row["aligned_event_count"]) == (4, 0, 0)
    assert row["customer_app_registration_completed"] is False


def test_counts_and_metadata(signals):
    meta = signals.pop("_metadata")
    users = [u for u in signals]
    assert meta["users_evaluated"] == len(users) == meta["dagster/row_count"]
    assert meta["true_customer_app_retained"] == sum(r["customer_app_retained"] for r in signals.values())
    assert signals["weeks_1_to_9_and_0"]["event_count"] == 10
    assert signals["weeks_1_to_9_and_0"]["aligned_event_count"] == 10
