"""Fixtures of the kpis domain: an application database with the source tables."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Iterator, Optional

import pytest
import sqlalchemy as sa

from analytics_platform.common import UTC, read_postgres_sql
from analytics_platform.kpis.rules import RecalcParams

AS_OF = dt.datetime(2024, 6, 6, 0, 0, tzinfo=UTC)  # Thursday -> week_start Monday 2024-06-03
WEEK = dt.date(2024, 6, 3)


def days_before(days: float, as_of: dt.datetime = AS_OF) -> dt.datetime:
    return as_of - dt.timedelta(days=days)


def params(**overrides: Any) -> RecalcParams:
    values = dict(
        as_of=AS_OF,
        threshold_days=7,
        lookback_days=30,
        use_bayesian=False,
        default_target=0.0,
        churn_horizon_days=14.0,
        dry_run=False,
    )
    values.update(overrides)
    return RecalcParams(**values)


class KpiDb:
    """The application database of one test, with helpers to write source rows."""

    def __init__(self, engine: sa.Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    def run(self, sql: str, rows: Optional[list[dict]] = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), rows or {})

    def create_sources(self, session: bool = True, weekly_kpi: bool = True) -> "KpiDb":
        with self.engine.begin() as conn:
            conn.exec_driver_sql(read_postgres_sql("kpis/create_source_tables"))
            if session:
                conn.exec_driver_sql(read_postgres_sql("kpis/create_session_table"))
            if weekly_kpi:
                conn.exec_driver_sql(read_postgres_sql("kpis/create_weekly_kpi"))
        return self

    def exam(self, user_id: str, score: Optional[float], created_at: dt.datetime,
             updated_at: Optional[dt.datetime] = None) -> None:
        self.run(
            "INSERT INTO exam_results (user_id, score, created_at, updated_at) VALUES (:u, :s, :c, :up)",
            [{"u": user_id, "s": score, "c": created_at, "up": updated_at}],
        )

    def exams(self, user_id: str, scores: list[float], at: dt.datetime) -> None:
        self.run(
            "INSERT INTO exam_results (user_id, score, created_at) VALUES (:u, :s, :c)",
            [{"u": user_id, "s": s, "c": at} for s in scores],
        )

    def feature(self, user_id: str, last_seen_at: dt.datetime) -> None:
        self.run(
            "INSERT INTO features_topic_daily (user_id, topic_id, day, last_seen_at) VALUES (:u, 't1', :d, :t)",
            [{"u": user_id, "d": last_seen_at.date(), "t": last_seen_at}],
        )

    def attempt(self, user_id: str, completed_at: dt.datetime) -> None:
        self.run(
            "INSERT INTO attempt_log (student_id, item_id, completed_at) VALUES (:u, 'i1', :t)",
            [{"u": user_id, "t": completed_at}],
        )

    def session(self, user_id: str, ended_at: dt.datetime) -> None:
        self.run("INSERT INTO session (user_id, ended_at) VALUES (:u, :t)", [{"u": user_id, "t": ended_at}])

    def goal(self, user_id: str, target: Optional[float]) -> None:
        self.run("INSERT INTO interest_goal (user_id, target_score) VALUES (:u, :t)", [{"u": user_id, "t": target}])

    def kpi_row(self, user_id: str, kpis: dict, week: dt.date = WEEK,
                updated_at: Optional[dt.datetime] = None) -> None:
        self.run(
            "INSERT INTO weekly_kpi (user_id, week_start, kpis, updated_at) "
            "VALUES (:u, :w, CAST(:k AS jsonb), :t)",
            [{"u": user_id, "w": week, "k": json.dumps(kpis), "t": updated_at}],
        )

    def kpis(self, user_id: str, week: dt.date = WEEK) -> Optional[dict]:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT kpis FROM weekly_kpi WHERE user_id = :u AND week_start = :w"),
                {"u": user_id, "w": week},
            ).scalar()

    def table(self, name: str) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY 1, 2"))]

    def exists(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar())


@pytest.fixture
def kpi_db(app_db, app_db_url) -> Iterator[KpiDb]:
    """Empty source tables (with ``session`` and ``weekly_kpi``) on a fresh database."""
    yield KpiDb(app_db.get_engine(), app_db_url).create_sources()


@pytest.fixture
def bare_db(app_db, app_db_url) -> Iterator[KpiDb]:
    """A fresh database without any table (tests create what they need)."""
    yield KpiDb(app_db.get_engine(), app_db_url)


class ListLog:
    """A logger that keeps (level, message) pairs, like the asset's context.log."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self._py = logging.getLogger("kpis-test")

    def info(self, msg: str, *args: Any) -> None:
        self.records.append(("info", msg))

    def warning(self, msg: str, *args: Any) -> None:
        self.records.append(("warning", msg))

    def error(self, msg: str, *args: Any) -> None:
        self.records.append(("error", msg))

    def messages(self, level: Optional[str] = None) -> list[str]:
        return [m for lvl, m in self.records if level is None or lvl == level]


@pytest.fixture
def log() -> ListLog:
    return ListLog()
