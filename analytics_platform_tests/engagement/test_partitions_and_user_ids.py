"""Acceptance 5 (a ``user_ids`` run upserts only those users; every other row of the
partition is unchanged) and the transactional replace of a partition."""

from __future__ import annotations

import dagster as dg

from analytics_platform.engagement import rules
from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY
from analytics_platform.engagement.store import MILESTONES_TABLE, SIGNALS_TABLE
from analytics_platform_tests.engagement.conftest import (
    DAY,
    FIT_APP,
    GOAL_FITNESS,
    GOAL_SLEEP,
    SLEEP_APP,
    T,
    WEEK,
    materialization_metadata,
    materialize,
    user_ids_config,
)

HOUR = WEEK / 168
OTHER_DAY = "2024-06-04"


def _population(world, n=6):
    for i in range(n):
        user = f"user{i}"
        world.goal(user, GOAL_FITNESS, tier=1)
        for k in range(i % 4):
            world.event(user, FIT_APP, T - k * WEEK - HOUR, fg=1000 * (i + 1), session=f"s{k}")


def test_user_ids_run_upserts_only_those_users(world):
    _population(world)
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY], partition=OTHER_DAY)
    before_s, before_m = world.rows(SIGNALS_TABLE), world.rows(MILESTONES_TABLE)
    other_day_before = world.rows(SIGNALS_TABLE, OTHER_DAY), world.rows(MILESTONES_TABLE, OTHER_DAY)
    assert before_s["user1"]["customer_app_registration_completed"] is False

    # new data for user1 (target) AND user2 (not targeted), and a brand-new user
    world.event("user1", FIT_APP, T - HOUR, fg=300_000, session="new")
    world.event("user2", FIT_APP, T - HOUR, fg=300_000, session="new")
    world.goal("user1", GOAL_SLEEP, tier=2)
    world.event("user1", SLEEP_APP, T - HOUR, fg=10, session="sleep")
    world.goal("newcomer", GOAL_FITNESS, tier=1)

    result = materialize(
        world.app_db, [SIGNALS_KEY, MILESTONES_KEY], run_config=user_ids_config(["user1", "nobody"])
    )
    after_s, after_m = world.rows(SIGNALS_TABLE), world.rows(MILESTONES_TABLE)

    # the targeted user is recomputed
    assert after_s["user1"]["customer_app_registration_completed"] is True
    assert after_s["user1"]["event_count"] == before_s["user1"]["event_count"] + 2
    assert after_m["user1"]["tier1_app_registered"] is True
    assert after_m["user1"]["tier2_app_registered"] is True
    assert after_s["user1"]["computed_at"] > before_s["user1"]["computed_at"]
    # every other row of the partition is unchanged, to the last column (computed_at too)
    assert {u: r for u, r in after_s.items() if u != "user1"} == {u: r for u, r in before_s.items() if u != "user1"}
    assert {u: r for u, r in after_m.items() if u != "user1"} == {u: r for u, r in before_m.items() if u != "user1"}
    assert after_s["user2"]["customer_app_registration_completed"] is False  # its new event not applied
    assert "newcomer" not in after_s
    # other partitions are untouched
    assert (world.rows(SIGNALS_TABLE, OTHER_DAY), world.rows(MILESTONES_TABLE, OTHER_DAY)) == other_day_before

    meta = materialization_metadata(result, SIGNALS_KEY)
    assert meta["mode"] == "user_ids"
    assert meta["users_requested"] == 2
    assert meta["users_evaluated"] == 1
    assert meta["users_without_goal_or_event"] == 1  # "nobody": no row is written
    assert meta["dagster/row_count"] == len(after_s)

    # a full run afterwards picks up everything
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    full = world.rows(SIGNALS_TABLE)
    assert full["user2"]["customer_app_registration_completed"] is True
    assert "newcomer" in full


def test_user_ids_run_removes_a_user_who_is_no_longer_evaluated(world):
    _population(world, n=3)
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    world.run("DELETE FROM user_goals WHERE user_id = 'user0'")  # user0 had no events either
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY], run_config=user_ids_config(["user0"]))
    assert "user0" not in world.rows(SIGNALS_TABLE)
    assert "user0" not in world.rows(MILESTONES_TABLE)
    assert {"user1", "user2"} <= set(world.rows(SIGNALS_TABLE))


def test_empty_user_ids_fails_with_a_message(world):
    _population(world, n=2)
    result = materialize(
        world.app_db, [SIGNALS_KEY], run_config=user_ids_config([], milestones=False), raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "user_ids is empty" in failure.step_failure_data.error.message


def test_rerun_replaces_the_partition(world):
    _population(world)
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    first = world.rows(SIGNALS_TABLE)
    result = materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    second = world.rows(SIGNALS_TABLE)
    strip = lambda rows: {u: {k: v for k, v in r.items() if k != "computed_at"} for u, r in rows.items()}
    assert strip(first) == strip(second)
    meta = materialization_metadata(result, SIGNALS_KEY)
    assert meta["rows_replaced"] == len(first) == meta["rows_written"]
    assert world.scalar("SELECT count(*) FROM user_engagement_signals") == len(first)

    # a user whose goals and events disappear leaves the partition on the next full run
    world.run("DELETE FROM user_goals WHERE user_id = 'user0'")
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    assert "user0" not in world.rows(SIGNALS_TABLE) and "user0" not in world.rows(MILESTONES_TABLE)


def test_failed_run_leaves_the_partition_as_it_was(world, monkeypatch):
    """DELETE and INSERT are one transaction: a failure in between changes nothing."""
    _population(world)
    materialize(world.app_db, [SIGNALS_KEY])
    before = world.rows(SIGNALS_TABLE)
    world.event("user1", FIT_APP, T - HOUR, fg=300_000, session="new")

    from analytics_platform.engagement import store

    real_replace = store.replace_partition_rows

    def replace_then_fail(conn, table, frame, *args, **kwargs):
        real_replace(conn, table, frame, *args, **kwargs)  # rows deleted and copied ...
        # ... but never committed (not retried here: the retry would fail the same way)
        raise dg.Failure("connection lost before commit", allow_retries=False)

    monkeypatch.setattr(store, "replace_partition_rows", replace_then_fail)
    result = materialize(world.app_db, [SIGNALS_KEY], raise_on_error=False)
    assert not result.success
    assert world.rows(SIGNALS_TABLE) == before


def test_as_of_is_the_end_of_the_partition_day():
    import datetime as dt

    assert rules.as_of_for_day(dt.date.fromisoformat(DAY)) == T
    assert T.tzinfo is not None and T.utcoffset() == dt.timedelta(0)
