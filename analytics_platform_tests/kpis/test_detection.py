"""Acceptance 1: last activity from each of the four sources, `session` optional, and the
exact `threshold_days` / `lookback_days` boundaries (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest

from analytics_platform.kpis.store import MissingSourceTables, recalculate

from .conftest import AS_OF, days_before, params

US = dt.timedelta(microseconds=1)


def inactive(db, **overrides) -> dict[str, float]:
    result = recalculate(db.engine, params(dry_run=True, **overrides))
    return dict(zip(result.users.get("user_id", []), result.users.get("days_inactive", [])))


def test_each_source_alone_sets_last_activity(kpi_db):
    kpi_db.exam("exam_created", 70, created_at=days_before(10))
    kpi_db.exam("exam_updated", 70, created_at=days_before(40), updated_at=days_before(11))
    kpi_db.feature("features", days_before(12))
    kpi_db.attempt("attempt", days_before(13))
    kpi_db.session("session", days_before(14))
    found = inactive(kpi_db)
    assert found == pytest.approx(
        {"exam_created": 10, "exam_updated": 11, "features": 12, "attempt": 13, "session": 14}, abs=1e-9
    )


@pytest.mark.parametrize(
    "source", ["exam_created", "exam_updated", "features", "attempt", "session"]
)
def test_recent_activity_in_any_source_makes_user_active(kpi_db, source):
    """Old activity everywhere, recent activity in ONE source: the latest wins -> active."""
    user = "u1"
    kpi_db.exam(user, 50, created_at=days_before(20))
    kpi_db.feature(user, days_before(20))
    kpi_db.attempt(user, days_before(20))
    kpi_db.session(user, days_before(20))
    recent = days_before(2)
    if source == "exam_created":
        kpi_db.exam(user, 60, created_at=recent)
    elif source == "exam_updated":  # COALESCE(updated_at, created_at): an old row updated lately
        kpi_db.exam(user, 60, created_at=days_before(25), updated_at=recent)
    elif source == "features":
        kpi_db.feature(user, recent)
    elif source == "attempt":
        kpi_db.attempt(user, recent)
    else:
        kpi_db.session(user, recent)
    assert inactive(kpi_db) == {}


def test_activity_at_or_after_as_of_does_not_count(kpi_db):
    kpi_db.feature("u1", days_before(9))
    kpi_db.attempt("u1", AS_OF)  # exactly as_of: not < as_of
    kpi_db.session("u1", AS_OF + dt.timedelta(days=1))
    assert inactive(kpi_db) == pytest.approx({"u1": 9.0})


def test_works_without_session_table(bare_db, log):
    bare_db.create_sources(session=False)
    bare_db.feature("features_only", days_before(8))
    result = recalculate(bare_db.engine, params(dry_run=True), log=log)
    assert result.session_table is False
    assert list(result.users["user_id"]) == ["features_only"]
    assert any("session does not exist" in m for m in log.messages("info"))


def test_session_table_changes_the_result_when_present(kpi_db):
    """The same data with a recent session: active when session exists."""
    kpi_db.feature("u1", days_before(8))
    assert list(inactive(kpi_db)) == ["u1"]
    kpi_db.session("u1", days_before(1))
    assert inactive(kpi_db) == {}


def test_threshold_boundary_is_inclusive(kpi_db):
    kpi_db.attempt("exactly_threshold", days_before(7))
    kpi_db.attempt("just_inside", days_before(7) + US)  # active 1 microsecond too recently
    kpi_db.attempt("just_beyond", days_before(7) - US)
    found = inactive(kpi_db)
    assert "exactly_threshold" in found and "just_beyond" in found
    assert "just_inside" not in found
    assert found["exactly_threshold"] == pytest.approx(7.0, abs=1e-12)


def test_lookback_boundary_is_inclusive(kpi_db):
    kpi_db.feature("exactly_lookback", days_before(30))
    kpi_db.feature("beyond_lookback", days_before(30) - US)
    kpi_db.feature("long_gone", days_before(90))
    found = inactive(kpi_db)
    assert set(found) == {"exactly_lookback"}
    assert found["exactly_lookback"] == pytest.approx(30.0, abs=1e-12)


def test_threshold_and_lookback_come_from_params(kpi_db):
    kpi_db.attempt("d5", days_before(5))
    kpi_db.attempt("d20", days_before(20))
    assert set(inactive(kpi_db, threshold_days=3, lookback_days=10)) == {"d5"}
    assert set(inactive(kpi_db, threshold_days=14, lookback_days=30)) == {"d20"}


def test_nulls_in_user_columns_are_ignored(kpi_db):
    kpi_db.exam(None, 50, created_at=days_before(10))
    kpi_db.attempt(None, days_before(10))
    assert inactive(kpi_db) == {}


def test_missing_required_source_fails_fast(bare_db):
    bare_db.run("CREATE TABLE exam_results (id int, user_id text, score float8, created_at timestamptz, updated_at timestamptz)")
    with pytest.raises(MissingSourceTables, match="features_topic_daily, attempt, interest_goal"):
        recalculate(bare_db.engine, params())
