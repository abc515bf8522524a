"""The one-off move of an old PostgreSQL mirror (tables of earlier versions) into the
warehouse: everything arrives once (re-runnable), the cursor continues, the old tables are
dropped only on request."""

from __future__ import annotations

import datetime as dt

from analytics_platform.common import UTC
from analytics_platform.engagement.move_mirror import move_mirror
from analytics_platform.engagement.assets import SIGNALS_KEY
from analytics_platform_tests.engagement.conftest import FIT_APP, GOAL_FITNESS, materialize

OLD_SCHEMA = """
CREATE TABLE firestore_app_usage_events (
    document_path TEXT PRIMARY KEY, user_id TEXT NOT NULL, event_id TEXT NOT NULL, app_id TEXT NOT NULL,
    foreground_time_ms BIGINT NOT NULL, session_id TEXT NOT NULL, event_timestamp TIMESTAMPTZ NOT NULL,
    extracted_at TIMESTAMPTZ NOT NULL);
CREATE TABLE firestore_app_usage_event_rejects (
    document_path TEXT PRIMARY KEY, user_id TEXT, event_id TEXT, reasons TEXT NOT NULL, raw_fields JSONB,
    event_timestamp TIMESTAMPTZ, first_seen_at TIMESTAMPTZ NOT NULL, last_seen_at TIMESTAMPTZ NOT NULL);
CREATE TABLE extraction_cursors (
    source TEXT PRIMARY KEY, cursor_timestamp TIMESTAMPTZ NOT NULL, cursor_document_path TEXT NOT NULL,
    documents_read_total BIGINT NOT NULL DEFAULT 0, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE user_engagement_aggregates (user_id TEXT, as_of_date DATE);
"""


def test_old_postgres_mirror_moves_to_the_warehouse(world):
    world.goal("alice", GOAL_FITNESS)
    with world.app_db.begin() as conn:
        conn.exec_driver_sql(OLD_SCHEMA)
    ts = dt.datetime(2024, 6, 5, 10, tzinfo=UTC)
    world.run(
        "INSERT INTO firestore_app_usage_events VALUES (:p, :u, :e, :a, :fg, 's1', :ts, :ts)",
        [{"p": f"app_usage_events/alice/events/e{i}", "u": "alice", "e": f"e{i}", "a": FIT_APP, "fg": 1000 + i,
          "ts": ts + dt.timedelta(minutes=i)} for i in range(5)],
    )
    world.run("INSERT INTO firestore_app_usage_event_rejects VALUES ('app_usage_events/bob/events/x', 'bob', 'x', "
              "'app_id is missing', '{\"session_id\": \"s\"}', :ts, :ts, :ts)", {"ts": ts})
    world.run("INSERT INTO extraction_cursors VALUES ('firestore:local-export:app_usage_events/*/events', :ts, "
              "'app_usage_events/alice/events/e4', 6, :ts)", {"ts": ts + dt.timedelta(minutes=4)})

    for _ in range(2):  # re-runnable: nothing is duplicated
        result = move_mirror(world.app_db, world.warehouse, "engagement", chunk=2)
        assert (result.events, result.rejects, result.cursors, result.dropped) == (5, 1, 1, ())
        assert len(world.mirror_table("firestore_app_usage_events")) == 5
        assert len(world.mirror_table("firestore_app_usage_event_rejects")) == 1
    stored = world.mirror.read_cursor("firestore:local-export:app_usage_events/*/events")
    assert stored.cursor.path == "app_usage_events/alice/events/e4" and stored.documents_read_total == 6
    assert set(world.mirror_table()["event_date"].astype(str)) == {"2024-06-05"}

    result = move_mirror(world.app_db, world.warehouse, "engagement", drop_source=True)
    assert set(result.dropped) == {"firestore_app_usage_events", "firestore_app_usage_event_rejects",
                                   "extraction_cursors", "user_engagement_aggregates"}
    assert world.scalar("SELECT to_regclass('firestore_app_usage_events')") is None
    # the signals read the moved mirror
    materialize(world.app_db, [SIGNALS_KEY])
    assert world.rows("user_engagement_signals")["alice"]["event_count"] == 5
