"""The engagement demo runs on the local default (local Firestore export + PostgreSQL) and
makes every signal and every milestone true for some user and false for another."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from analytics_platform.engagement.rules import MILESTONE_FLAGS, SIGNAL_FLAGS


def test_demo_covers_every_signal_and_milestone(app_db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APP_DATABASE_URL", app_db_url)  # the test server instead of the embedded one
    for var in ("ANALYTICS_ENV", "FIRESTORE_EMULATOR_HOST", "FIREBASE_PROJECT_ID", "FIREBASE_CREDENTIALS_FILE",
                "FIREBASE_SERVICE_ACCOUNT_JSON", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    # analytics_platform.definitions builds its resources from the environment at import:
    # import it afresh under this test's environment (the original module is restored after)
    import sys

    monkeypatch.delitem(sys.modules, "analytics_platform.definitions", raising=False)
    from analytics_platform.demo.runner import run_demo

    assert run_demo(domains=["engagement"]) == 0
    assert (tmp_path / "data" / "firestore" / "events.jsonl").exists()
    engine = sa.create_engine(app_db_url)
    from analytics_platform.engagement.store import Mirror
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    mirror = Mirror(DuckDBWarehouse(path=str(tmp_path / "data" / "warehouse.duckdb")), "engagement")
    source = "firestore:local-export:app_usage_events/*/events"

    def count(sql: str) -> int:
        return int(mirror.warehouse.query(sql).iloc[0, 0])

    try:
        with engine.connect() as conn:
            def values(table, flag):
                return {r[0] for r in conn.execute(sa.text(f"SELECT DISTINCT {flag} FROM {table} WHERE as_of_date = '2024-06-05'"))}

            for flag in SIGNAL_FLAGS:
                assert values("user_engagement_signals", flag) == {True, False}, flag
            for flag in MILESTONE_FLAGS:
                assert values("user_milestones", flag) == {True, False}, flag
            first = conn.execute(sa.text("SELECT count(*), max(computed_at) FROM user_engagement_signals")).one()
        # the mirror is in the warehouse, not in PostgreSQL
        rejects = count("SELECT COUNT(*) FROM `engagement.firestore_app_usage_event_rejects`")
        assert rejects == 3
        events_before = count("SELECT COUNT(*) FROM `engagement.firestore_app_usage_events`")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('firestore_app_usage_events')")).scalar() is None

        # a second run (re-seed + re-materialize) changes nothing but computed_at
        assert run_demo(domains=["engagement"]) == 0
        with engine.connect() as conn:
            again = conn.execute(sa.text("SELECT count(*), max(computed_at) FROM user_engagement_signals")).one()
        events = count("SELECT COUNT(*) FROM `engagement.firestore_app_usage_events`")
        stored = mirror.read_cursor(source)
        # the documents the default 72 h re-read window behind the cursor covers
        low = stored.cursor.timestamp - dt.timedelta(hours=72)
        in_window = len(mirror.warehouse.query(
            "SELECT document_path FROM `engagement.firestore_app_usage_events` WHERE event_timestamp >= @low "
            "UNION ALL SELECT document_path FROM `engagement.firestore_app_usage_event_rejects` "
            "WHERE event_timestamp >= @low", {"low": low}))
        assert again[0] == first[0] and again[1] > first[1]
        assert events == events_before
        # the second extraction re-read only the late-write window, nothing else
        assert 0 < in_window < events + rejects
        assert stored.documents_read_total == events + rejects + in_window
    finally:
        engine.dispose()
    assert "materialized app_db/user_milestones" in capsys.readouterr().out
