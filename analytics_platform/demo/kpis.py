"""Demo data for the kpis domain: learners in the application PostgreSQL.

Writes into ``ctx.resources["app_db"]`` (the embedded PostgreSQL on the local default),
creating the source tables when missing.  Deterministic (``ctx.rng("kpis")``, fixed
``ctx.as_of``); re-seeding first deletes the rows of the demo learners (ids ``demo_*``), so
nothing else in the database is touched.

Learners (as_of = end of 2024-06-05, threshold 7 days, lookback 30 days):

* ``demo_active_*``: activity in the last 7 days in one of the four sources -> not processed;
* ``demo_inactive_*``: last activity 7-30 days ago, with or without exam scores in the
  window and with or without an ``interest_goal`` -> P and S (or only S);
* ``demo_gone_*``: last activity more than 30 days ago -> beyond the lookback, not processed;
* ``demo_inactive_with_kpis_*``: already have this week's ``weekly_kpi`` row with
  I_t/E_t/R_t/A_t from the daily batch -> those keys are kept;
* ``demo_bad_score``: an exam score of 104 -> fails alone (shown in the log and the check).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from analytics_platform.common import UTC, read_postgres_sql, week_start
from analytics_platform.demo import DemoContext, DemoStep
from analytics_platform.kpis.assets import run_config

N_ACTIVE = 40
N_INACTIVE = 80
N_GONE = 20
N_WITH_KPIS = 10
SOURCES = ("exam", "features", "attempt", "session")


def build_rows(ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
    """Every demo row, by table (pure: the same rows for the same ctx)."""
    rng = ctx.rng("kpis")
    as_of = ctx.as_of
    rows: dict[str, list[dict[str, Any]]] = {
        "exam_results": [], "features_topic_daily": [], "attempt_log": [], "session": [],
        "interest_goal": [], "weekly_kpi": [],
    }

    def at(days_ago: float) -> dt.datetime:
        return (as_of - dt.timedelta(days=days_ago)).replace(microsecond=0)

    def activity(user: str, source: str, when: dt.datetime, score: float | None = None) -> None:
        if source == "exam":
            rows["exam_results"].append({"user_id": user, "score": score if score is not None else round(rng.uniform(35, 98), 1),
                                         "created_at": when, "updated_at": None})
        elif source == "features":
            rows["features_topic_daily"].append({"user_id": user, "topic_id": f"topic_{rng.randint(1, 12)}",
                                                 "day": when.date(), "last_seen_at": when})
        elif source == "attempt":
            rows["attempt_log"].append({"student_id": user, "item_id": f"item_{rng.randint(1, 500)}", "completed_at": when})
        else:
            rows["session"].append({"user_id": user, "ended_at": when})

    def history(user: str, last_days_ago: float, n_exams_in_window: int) -> None:
        """Activity whose latest instant is ``last_days_ago`` before as_of."""
        activity(user, rng.choice(SOURCES[1:]), at(last_days_ago))  # the latest, a non-exam source
        for _ in range(rng.randint(0, 3)):
            activity(user, rng.choice(SOURCES[1:]), at(last_days_ago + rng.uniform(0.5, 20)))
        for _ in range(n_exams_in_window):
            # inside the window [as_of - 30 d, as_of) and not later than the last activity
            activity(user, "exam", at(rng.uniform(last_days_ago, 29.5)))
        if rng.random() < 0.5:  # older exams, outside the window: do not count for P
            activity(user, "exam", at(rng.uniform(32, 60)))

    for i in range(N_ACTIVE):
        user = f"demo_active_{i:03d}"
        activity(user, SOURCES[i % 4], at(rng.uniform(0.1, 6.5)))
        history(user, rng.uniform(7, 25), rng.randint(0, 3))  # older activity too
    for i in range(N_INACTIVE):
        user = f"demo_inactive_{i:03d}"
        history(user, rng.uniform(7.01, 29.9), 0 if i % 5 == 0 else rng.randint(1, 6))
        if i % 3 != 0:
            rows["interest_goal"].append({"user_id": user, "target_score": float(rng.choice([60, 70, 75, 80, 90]))})
    for i in range(N_GONE):
        history(f"demo_gone_{i:03d}", rng.uniform(31, 90), 0)
    week = week_start(ctx.demo_date)
    for i in range(N_WITH_KPIS):
        user = f"demo_inactive_with_kpis_{i:03d}"
        history(user, rng.uniform(8, 28), rng.randint(1, 4))
        rows["weekly_kpi"].append({
            "user_id": user, "week_start": week,
            "kpis": json.dumps({"I_t": round(rng.random(), 4), "E_t": round(rng.random(), 4),
                                "R_t": round(rng.random(), 4), "A_t": round(rng.random(), 4),
                                "P": 0.5, "S": 0.1}),
            "updated_at": dt.datetime.combine(week, dt.time(1, 0), tzinfo=UTC),
        })
    activity("demo_bad_score", "exam", at(12.0), score=104.0)
    return rows


_INSERTS = {
    "exam_results": "INSERT INTO exam_results (user_id, score, created_at, updated_at) "
                    "VALUES (:user_id, :score, :created_at, :updated_at)",
    "features_topic_daily": "INSERT INTO features_topic_daily (user_id, topic_id, day, last_seen_at) "
                            "VALUES (:user_id, :topic_id, :day, :last_seen_at)",
    "attempt_log": "INSERT INTO attempt_log (student_id, item_id, completed_at) VALUES (:student_id, :item_id, :completed_at)",
    "session": "INSERT INTO session (user_id, ended_at) VALUES (:user_id, :ended_at)",
    "interest_goal": "INSERT INTO interest_goal (user_id, target_score) VALUES (:user_id, :target_score)",
    "weekly_kpi": "INSERT INTO weekly_kpi (user_id, week_start, kpis, updated_at) "
                  "VALUES (:user_id, :week_start, CAST(:kpis AS jsonb), :updated_at)",
}
_USER_COLUMN = {"attempt_log": "student_id"}


def seed(ctx: DemoContext) -> None:
    app_db = ctx.resources["app_db"]
    rows = build_rows(ctx)
    with app_db.begin() as conn:
        conn.exec_driver_sql(read_postgres_sql("kpis/create_source_tables"))
        conn.exec_driver_sql(read_postgres_sql("kpis/create_session_table"))
        conn.exec_driver_sql(read_postgres_sql("kpis/create_weekly_kpi"))
        for table, insert in _INSERTS.items():
            column = _USER_COLUMN.get(table, "user_id")
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} LIKE 'demo\\_%'"))
            if rows[table]:
                conn.execute(sa.text(insert), rows[table])


def steps(ctx: DemoContext) -> list[DemoStep]:
    as_of = ctx.as_of.isoformat()
    return [
        DemoStep(
            selection=["app_db/weekly_kpi"],
            run_config=run_config(as_of=as_of, dry_run=True),
            description="weekly_kpi dry run (reports old -> new P/S, writes nothing)",
            planted=("demo_bad_score has an exam score of 104: that learner fails alone (ERROR), nothing is written for them", "16 learners have no exam score in 30 days: only S is written for them (WARNING)"),
        ),
        DemoStep(
            selection=["app_db/weekly_kpi"],
            run_config=run_config(as_of=as_of),
            description="weekly_kpi: P/S of inactive learners",
            planted=("demo_bad_score has an exam score of 104: that learner fails alone (ERROR), nothing is written for them", "16 learners have no exam score in 30 days: only S is written for them (WARNING)"),
        ),
    ]
