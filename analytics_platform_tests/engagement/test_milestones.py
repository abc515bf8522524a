"""Acceptance 2: tier-1 vs tier-2 milestones for a user whose goals span both tiers; a user
with events but no goals; a user with goals but no events. Plus the milestone checks."""

from __future__ import annotations

from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY
from analytics_platform.engagement.rules import MILESTONE_FLAGS
from analytics_platform.engagement.store import MILESTONES_TABLE, SIGNALS_TABLE
from analytics_platform_tests.engagement.conftest import (
    FIT_APP,
    GOAL_FINANCE,
    GOAL_FITNESS,
    GOAL_SLEEP,
    MONEY_APP,
    SLEEP_APP,
    T,
    WEEK,
    check_results,
    materialization_metadata,
    materialize,
)

HOUR = WEEK / 168


def _weekly(world, user, app, weeks, fg=100_000):
    for k in weeks:
        world.event(user, app, T - k * WEEK - HOUR, fg=fg, session=f"{app}-{k}")


def test_tiers_and_users_without_goals_or_events(world):
    # both tiers: fitness = tier 1, sleep = tier 2; activity only on the tier-1 app
    world.goal("both_tiers_t1_active", GOAL_FITNESS, tier=1)
    world.goal("both_tiers_t1_active", GOAL_SLEEP, tier=2)
    _weekly(world, "both_tiers_t1_active", FIT_APP, range(3), fg=250_000)  # registered + engaged
    # both tiers, activity only on the tier-2 app, and dropped off (weeks 1..2, not week 0)
    world.goal("both_tiers_t2_dropoff", GOAL_FITNESS, tier=1)
    world.goal("both_tiers_t2_dropoff", GOAL_SLEEP, tier=2)
    _weekly(world, "both_tiers_t2_dropoff", SLEEP_APP, [1, 2], fg=50)
    # both tiers active on both apps for 9 weeks -> retained for both tiers
    world.goal("both_tiers_retained", GOAL_FITNESS, tier=1)
    world.goal("both_tiers_retained", GOAL_SLEEP, tier=2)
    _weekly(world, "both_tiers_retained", FIT_APP, range(9), fg=10)
    _weekly(world, "both_tiers_retained", SLEEP_APP, [0], fg=10)
    # tier-2 retention drop-off: weeks 1..9 on the tier-2 app
    world.goal("t2_retention_dropoff", GOAL_FINANCE, tier=2)
    _weekly(world, "t2_retention_dropoff", MONEY_APP, range(1, 10), fg=10)
    # events but no goals: every signal that needs alignment is false, so are milestones
    _weekly(world, "events_no_goals", FIT_APP, range(10), fg=300_000)
    # goals but no events
    world.goal("goals_no_events", GOAL_FITNESS, tier=1)
    world.goal("goals_no_events", GOAL_SLEEP, tier=2)

    result = materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    m = world.rows(MILESTONES_TABLE)
    s = world.rows(SIGNALS_TABLE)
    assert set(m) == set(s) == {
        "both_tiers_t1_active", "both_tiers_t2_dropoff", "both_tiers_retained",
        "t2_retention_dropoff", "events_no_goals", "goals_no_events",
    }

    row = m["both_tiers_t1_active"]
    assert row["goal_setting_complete"] is True
    assert row["tier1_app_registered"] is True and row["tier1_app_engaged"] is True
    assert row["tier2_app_registered"] is False and row["tier2_app_engaged"] is False
    assert row["tier1_app_engagement_dropoff"] is False and row["tier1_app_retained"] is False

    row = m["both_tiers_t2_dropoff"]
    assert s["both_tiers_t2_dropoff"]["customer_app_engagement_dropoff"] is True
    assert row["tier2_app_engagement_dropoff"] is True
    assert row["tier1_app_engagement_dropoff"] is False  # no tier-1 aligned event
    assert row["tier2_app_registered"] is False  # 50 ms, 2 sessions

    row = m["both_tiers_retained"]
    assert row["tier1_app_retained"] is True and row["tier2_app_retained"] is True
    assert row["tier1_app_engaged"] is True and row["tier2_app_engaged"] is True

    row = m["t2_retention_dropoff"]
    assert row["tier2_app_retention_dropoff"] is True and row["tier2_app_engagement_dropoff"] is True
    assert row["tier1_app_retention_dropoff"] is False

    sig = s["events_no_goals"]
    assert sig["goal_setting_completed"] is False
    assert (sig["event_count"], sig["service_event_count"], sig["aligned_event_count"]) == (10, 10, 0)
    assert not any(sig[f] for f in sig if f.startswith("customer_app_"))
    assert not any(m["events_no_goals"][f] for f in MILESTONE_FLAGS)

    sig = s["goals_no_events"]
    assert sig["goal_setting_completed"] is True and sig["event_count"] == 0
    row = m["goals_no_events"]
    assert row["goal_setting_complete"] is True
    assert not any(row[f] for f in MILESTONE_FLAGS if f.startswith("tier"))

    checks = check_results(result)
    assert all(c.passed for c in checks.values()), checks
    assert ("app_db/user_milestones", "milestones_imply_goal_setting") in checks
    assert ("app_db/user_engagement_signals", "one_row_per_user_and_date") in checks
    meta = materialization_metadata(result, MILESTONES_KEY)
    assert meta["dagster/row_count"] == 6
    assert meta["true_tier2_app_retention_dropoff"] == 1


def test_goal_setting_check_fails_on_a_corrupted_row(world):
    """The check reads the table: a row with a tier milestone but no goal setting fails it."""
    world.goal("u1", GOAL_FITNESS, tier=1)
    _weekly(world, "u1", FIT_APP, range(3))
    materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY])
    # another writer corrupts a different day's partition, then the asset runs for it
    world.run(
        "INSERT INTO user_milestones SELECT 'intruder', as_of_date, false, true, false, false, false, false, "
        "false, false, false, false, false, computed_at FROM user_milestones WHERE user_id = 'u1'"
    )
    result = materialize(world.app_db, [MILESTONES_KEY])  # replaces the partition: intruder gone
    checks = check_results(result)
    assert checks[("app_db/user_milestones", "milestones_imply_goal_setting")].passed
    assert "intruder" not in world.rows(MILESTONES_TABLE)

    # a user_ids run leaves other rows alone, so the corrupted row is seen by the check
    world.run(
        "INSERT INTO user_milestones SELECT 'intruder', as_of_date, false, true, false, false, false, false, "
        "false, false, false, false, false, computed_at FROM user_milestones WHERE user_id = 'u1'"
    )
    result = materialize(world.app_db, [MILESTONES_KEY], run_config={
        "ops": {"app_db__user_milestones": {"config": {"user_ids": ["u1"]}}}
    })
    checks = check_results(result)
    assert not checks[("app_db/user_milestones", "milestones_imply_goal_setting")].passed
    assert not checks[("app_db/user_milestones", "same_users_as_signals")].passed


def test_milestones_refuse_signals_written_without_their_aggregates(world):
    world.goal("u1", GOAL_FITNESS, tier=1)
    materialize(world.app_db, [SIGNALS_KEY])
    world.warehouse.execute("DELETE FROM `engagement.user_engagement_aggregates` WHERE TRUE")
    result = materialize(world.app_db, [MILESTONES_KEY], raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "re-materialize app_db/user_engagement_signals" in message
