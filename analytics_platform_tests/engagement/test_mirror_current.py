"""Issue items 1-3: the signals bring the mirror up to T themselves (a fresh instance equals
the per-user reference), late uploads are counted on the next run with default settings,
Firestore unreachable fails the run naming the cause (nothing written), and a failing
untimed-document count never fails the run. Real Firestore emulator and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from analytics_platform.common import UTC, utc_now
from analytics_platform.engagement.assets import EXTRACTED_EVENTS_KEY, MILESTONES_KEY, SIGNALS_KEY, SIGNALS_OP
from analytics_platform.engagement.store import MILESTONES_TABLE, SIGNALS_TABLE, mirror_needs_sync
from analytics_platform.engagement.rules import MILESTONE_FLAGS, SIGNAL_COUNTS, SIGNAL_FLAGS
from analytics_platform_tests.engagement.conftest import (
    DAY,
    FIT_APP,
    GOAL_FITNESS,
    EngagementDb,
    emulator_resource,
    materialization_metadata,
    materialize,
)
from analytics_platform_tests.engagement.test_against_reference import _expected, _random_world

HOUR = dt.timedelta(hours=1)


class FirestoreWorld(EngagementDb):
    """An application database whose events go to Firestore (not into the mirror)."""

    def __init__(self, app_db, fs) -> None:
        super().__init__(app_db, None)
        self.fs = fs
        self.written = 0

    def events(self, rows) -> int:
        docs = []
        for row in rows:
            self.written += 1
            docs.append({
                "path": f"app_usage_events/{row['user_id']}/events/ev{self.written:06d}",
                "fields": {"app_id": row["app_id"], "foreground_time_ms": row.get("fg", 1000),
                           "session_id": row.get("session", "s1"), "timestamp": row["ts"]},
            })
        return self.fs.write_documents(docs)


@pytest.fixture
def fs(firestore_emulator, firestore_project):
    return emulator_resource(firestore_emulator, firestore_project)


def test_fresh_instance_materialization_equals_the_reference(eng_db, fs):
    """Nothing extracted before: materializing the two assets for D reads Firestore up to T
    itself and equals the independent per-user implementation of the spec."""
    world = FirestoreWorld(eng_db.app_db, fs)  # same database; the warehouse stays eng_db's
    user_goals, events, service = _random_world(world, seed=3)
    assert eng_db.mirror_table().empty  # a fresh mirror
    result = materialize(eng_db.app_db, [SIGNALS_KEY, MILESTONES_KEY], firestore=fs)
    meta = materialization_metadata(result, SIGNALS_KEY)
    assert meta["mirror_synced"] is True and meta["mirror_documents_read"] == world.written

    signals, milestones = eng_db.rows(SIGNALS_TABLE), eng_db.rows(MILESTONES_TABLE)
    expected = _expected(user_goals, events, service)
    assert set(signals) == set(milestones) == set(expected)
    assert sum(r["event_count"] for r in signals.values()) > 0
    for user, exp in expected.items():
        assert {f: signals[user][f] for f in SIGNAL_FLAGS} == exp["signals"], user
        assert {c: signals[user][c] for c in SIGNAL_COUNTS} == exp["counts"], user
        assert {f: milestones[user][f] for f in MILESTONE_FLAGS} == exp["milestones"], user


def test_late_upload_is_counted_by_the_next_run_with_default_settings(world, fs):
    """A document written after a run, with a timestamp the cursor has already passed."""
    day = (utc_now().date() - dt.timedelta(days=1))  # the newest complete day
    t = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=UTC)
    world.goal("alice", GOAL_FITNESS)
    doc = lambda name, ts: {"path": f"app_usage_events/alice/events/{name}",  # noqa: E731
                            "fields": {"app_id": FIT_APP, "foreground_time_ms": 1000, "session_id": "s", "timestamp": ts}}
    fs.write_documents([doc("on_time", t - 2 * HOUR)])
    materialize(world.app_db, [SIGNALS_KEY], partition=day.isoformat(), firestore=fs)
    assert world.rows(SIGNALS_TABLE, day.isoformat())["alice"]["event_count"] == 1

    fs.write_documents([doc("uploaded_late", t - 3 * HOUR)])  # behind the cursor (t - 2 h)
    result = materialize(world.app_db, [SIGNALS_KEY], partition=day.isoformat(), firestore=fs)
    assert world.rows(SIGNALS_TABLE, day.isoformat())["alice"]["event_count"] == 2
    meta = materialization_metadata(result, SIGNALS_KEY)
    assert meta["mirror_synced"] is True and meta["mirror_inserted"] == 1

    # a day whose re-read window lies before the last complete read costs no Firestore read
    old = (day - dt.timedelta(days=10)).isoformat()
    meta = materialization_metadata(materialize(world.app_db, [SIGNALS_KEY], partition=old, firestore=fs), SIGNALS_KEY)
    assert meta["mirror_synced"] is False


def test_firestore_unreachable_fails_naming_the_cause_and_writes_nothing(world):
    world.goal("alice", GOAL_FITNESS)
    unreachable = emulator_resource("127.0.0.1:9", "demo-unreachable", read_timeout_seconds=2)
    result = materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY], firestore=unreachable, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    message = failures[0].event_specific_data.error.message
    assert "Firestore emulator 127.0.0.1:9" in message and "no signals were computed" in message
    assert world.rows(SIGNALS_TABLE) == {} and world.rows(MILESTONES_TABLE) == {}
    assert len(failures) == 1  # not retried: the client retried already


def test_a_failing_untimed_count_does_not_fail_the_job(world, fs):
    world.goal("alice", GOAL_FITNESS)
    fs.write_documents([
        {"path": "app_usage_events/alice/events/e1",
         "fields": {"app_id": FIT_APP, "foreground_time_ms": 1000, "session_id": "s",
                    "timestamp": dt.datetime(2024, 6, 5, 12, tzinfo=UTC)}},
        {"path": "app_usage_events/alice/events/untimed", "fields": {"app_id": FIT_APP}},
    ])
    # a bound no count can meet: the aggregation query fails with a deadline error
    config = {"ops": {SIGNALS_OP: {"config": {"untimed_count_timeout_seconds": 0.000001}}}}
    result = materialize(world.app_db, [SIGNALS_KEY, MILESTONES_KEY], firestore=fs, run_config=config)
    assert result.success
    meta = materialization_metadata(result, SIGNALS_KEY)
    assert "untimed_count_error" in meta and "without_valid_timestamp" not in meta
    assert world.rows(SIGNALS_TABLE)["alice"]["event_count"] == 1
    # with the default bound the same count works
    result = materialize(world.app_db, [EXTRACTED_EVENTS_KEY], partition=None, firestore=fs)
    meta = materialization_metadata(result, EXTRACTED_EVENTS_KEY)
    assert meta["without_valid_timestamp"] == 1 and "untimed_count_error" not in meta


def test_when_the_mirror_must_be_read():
    t = dt.datetime(2024, 6, 6, tzinfo=UTC)
    window, now = dt.timedelta(hours=72), dt.datetime(2024, 6, 6, 2, tzinfo=UTC)
    zero = dt.timedelta(0)
    assert mirror_needs_sync(None, t, now, window, zero)  # fresh instance
    assert mirror_needs_sync(t + HOUR, t, now, window, zero)  # late uploads may still come
    assert not mirror_needs_sync(t + window, t, now, window, zero)  # window over: backfills read nothing
    assert not mirror_needs_sync(now - HOUR, t, now, window, 2 * HOUR)  # the tick's first run just read
    assert mirror_needs_sync(now - 3 * HOUR, t, now, window, 2 * HOUR)
