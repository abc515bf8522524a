"""Benchmark ``inactivity_kpi``: P/S recalculation on PostgreSQL, set-based vs per-user.

    python -m benchmarks run inactivity_kpi                       # 100k learners (default)
    python -m benchmarks run inactivity_kpi --scale 20000 --baseline-scale 500

``scale`` = learners.  The data set per scale S (deterministic, generated inside
PostgreSQL with ``generate_series``): 30 % of the learners inactive (last activity 7-30
days before as_of), 60 % active, 10 % gone (> 30 days); 10 exam results per learner
(1M at 100k); a features row, 2 attempts and a session per learner; goals for half of
them; this week's weekly_kpi row (I_t/E_t/R_t/A_t/P/S) for half of them.

* ``platform``: :func:`analytics_platform.kpis.store.recalculate` (one read statement,
  vectorised models, one upsert statement, one commit).
* ``baseline``: the old job's shape — the inactive users from one query, then per user a
  query for the scores and the goal, scalar P/S, a read-modify-write of the row and a
  commit per user.  It is slow, so it runs on the first ``baseline_scale`` inactive users
  (default 2 000) and the time is extrapolated linearly to all of them (``extra``).

PostgreSQL: ``BENCH_POSTGRES_URL`` when set (a scratch database: the tables are dropped),
else a throwaway cluster from the system binaries (found like the test fixture does) with
PostgreSQL's default, production durability — a commit waits for its WAL flush, which is
what the old job's commit per user paid.  ``BENCH_PG_DURABILITY=test`` uses the test
fixture's server instead (``fsync=off``: commits cost almost nothing, so the ratio shrinks
to what the queries alone cost).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import sqlalchemy as sa

from analytics_platform.common import UTC, read_postgres_sql
from analytics_platform.kpis.rules import RecalcParams
from analytics_platform.kpis.store import recalculate
from benchmarks.harness import Measurement, measure

DEFAULT_SCALES = [100_000]
NAME = "inactivity_kpi"
AS_OF = dt.datetime(2024, 6, 6, tzinfo=UTC)
WEEK = dt.date(2024, 6, 3)
DEFAULT_BASELINE_USERS = 2_000


def _params() -> RecalcParams:
    return RecalcParams(
        as_of=AS_OF, threshold_days=7, lookback_days=30, use_bayesian=False,
        default_target=0.0, churn_horizon_days=14.0,
    )


SEED_SQL = """
SELECT setseed(0.42);
DROP VIEW IF EXISTS attempt CASCADE;
DROP TABLE IF EXISTS exam_results, features_topic_daily, attempt_log, session, interest_goal,
    weekly_kpi, weekly_kpi_recalc_runs, bench_learner CASCADE;
{create_sources}
{create_session}
{create_weekly_kpi}
-- last activity per learner: 30 % inactive (7-30 d), 60 % active (0-7 d), 10 % gone (31-90 d)
CREATE TABLE bench_learner AS
SELECT 'u' || lpad(i::text, 7, '0') AS user_id,
       CAST(:as_of AS timestamptz) - make_interval(secs => 86400 * CASE
            WHEN i % 10 < 3 THEN 7.001 + random() * 22.9
            WHEN i % 10 < 9 THEN random() * 6.9
            ELSE 31 + random() * 59 END) AS last_at
FROM generate_series(0, :learners - 1) AS i;
INSERT INTO features_topic_daily (user_id, topic_id, day, last_seen_at)
SELECT user_id, 't' || (random() * 20)::int, last_at::date, last_at FROM bench_learner;
INSERT INTO attempt_log (student_id, item_id, completed_at)
SELECT user_id, 'i' || k, last_at - make_interval(secs => 86400 * (0.5 + random() * 20))
FROM bench_learner, generate_series(1, 2) AS k;
INSERT INTO session (user_id, ended_at)
SELECT user_id, last_at - make_interval(secs => 3600 * (1 + random() * 48)) FROM bench_learner;
INSERT INTO exam_results (user_id, score, created_at, updated_at)
SELECT user_id, round((20 + random() * 80)::numeric, 1)::float8,
       last_at - make_interval(secs => 86400 * random() * 40), NULL
FROM bench_learner, generate_series(1, :exams_per_learner) AS k;
INSERT INTO interest_goal (user_id, target_score)
SELECT user_id, (50 + (random() * 4)::int * 10)::float8 FROM bench_learner WHERE random() < 0.5;
INSERT INTO weekly_kpi (user_id, week_start, kpis, updated_at)
SELECT user_id, CAST(:week AS date),
       jsonb_build_object('I_t', random(), 'E_t', random(), 'R_t', random(), 'A_t', random(), 'P', 0.5, 'S', 0.1),
       CAST(:as_of AS timestamptz) - interval '2 days'
FROM bench_learner WHERE random() < 0.5;
-- the indexes an application database has (the baseline needs them per user)
CREATE INDEX IF NOT EXISTS features_topic_daily_user_idx ON features_topic_daily (user_id);
CREATE INDEX IF NOT EXISTS attempt_log_student_idx ON attempt_log (student_id);
CREATE INDEX IF NOT EXISTS session_user_idx ON session (user_id);
CREATE INDEX IF NOT EXISTS interest_goal_user_idx ON interest_goal (user_id);
ANALYZE;
"""


def seed(engine: sa.Engine, learners: int, exams_per_learner: int = 10) -> dict:
    sql = SEED_SQL.replace("{create_sources}", read_postgres_sql("kpis/create_source_tables")).replace(
        "{create_session}", read_postgres_sql("kpis/create_session_table")
    ).replace("{create_weekly_kpi}", read_postgres_sql("kpis/create_weekly_kpi"))
    with engine.begin() as conn:
        for statement in [s for s in sql.split(";\n") if s.strip()]:
            conn.execute(
                sa.text(statement),
                {k: v for k, v in {"as_of": AS_OF, "learners": learners, "week": WEEK,
                                   "exams_per_learner": exams_per_learner}.items() if f":{k}" in statement},
            )
    with engine.connect() as conn:
        counts = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("exam_results", "weekly_kpi", "interest_goal")
        }
        counts["inactive_expected"] = conn.execute(
            sa.text("SELECT count(*) FROM bench_learner WHERE last_at <= :until AND last_at >= :low"),
            {"until": AS_OF - dt.timedelta(days=7), "low": AS_OF - dt.timedelta(days=30)},
        ).scalar()
    return counts


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def baseline(engine: sa.Engine, limit: int) -> tuple[int, float, float]:
    """The old job's shape: a query and a commit per user (normal model, scalar math).

    Returns (users done, seconds finding the inactive users, seconds of the per-user loop).
    """
    p = _params()
    started = time.perf_counter()
    with engine.connect() as conn:
        users = conn.execute(
            sa.text(
                "WITH a AS (SELECT user_id, COALESCE(updated_at, created_at) AS t FROM exam_results "
                "UNION ALL SELECT user_id, last_seen_at FROM features_topic_daily "
                "UNION ALL SELECT student_id, completed_at FROM attempt "
                "UNION ALL SELECT user_id, ended_at FROM session) "
                "SELECT user_id, max(t) FROM a WHERE t < :as_of GROUP BY user_id "
                "HAVING max(t) BETWEEN :low AND :until ORDER BY user_id LIMIT :limit"
            ),
            {"as_of": p.as_of, "low": p.lookback_start, "until": p.inactive_until, "limit": limit},
        ).fetchall()
    find_seconds = time.perf_counter() - started
    done = 0
    started = time.perf_counter()
    with engine.connect() as conn:
        for user_id, last_at in users:
            scores = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "SELECT score FROM exam_results WHERE user_id = :u AND score IS NOT NULL "
                        "AND COALESCE(updated_at, created_at) >= :low AND COALESCE(updated_at, created_at) < :as_of"
                    ),
                    {"u": user_id, "low": p.lookback_start, "as_of": p.as_of},
                )
            ]
            target = conn.execute(
                sa.text("SELECT max(target_score) FROM interest_goal WHERE user_id = :u"), {"u": user_id}
            ).scalar()
            tau = p.default_target if target is None else target
            days = (p.as_of - last_at).total_seconds() / 86400.0
            s_value = 1.0 - math.exp(-days / p.churn_horizon_days)
            patch = {"S": s_value}
            if scores:
                n = len(scores)
                m = sum(scores) / n
                sd = math.sqrt(sum((x - m) ** 2 for x in scores) / (n - 1)) if n > 1 else 0.0
                patch["P"] = _phi((m - tau) / (max(sd, 10.0) / math.sqrt(n))) * (1 - s_value)
            row = conn.execute(
                sa.text("SELECT kpis FROM weekly_kpi WHERE user_id = :u AND week_start = :w"),
                {"u": user_id, "w": p.week_start},
            ).scalar()
            kpis = {**(row or {}), **patch}
            conn.execute(
                sa.text(
                    "INSERT INTO weekly_kpi (user_id, week_start, kpis, updated_at) "
                    "VALUES (:u, :w, CAST(:k AS jsonb), now()) ON CONFLICT (user_id, week_start) "
                    "DO UPDATE SET kpis = EXCLUDED.kpis, updated_at = EXCLUDED.updated_at"
                ),
                {"u": user_id, "w": p.week_start, "k": json.dumps(kpis)},
            )
            conn.commit()
            done += 1
    return done, find_seconds, time.perf_counter() - started


def _start_durable_server():
    """A throwaway cluster with PostgreSQL's default durability (fsync, synchronous_commit
    and full_page_writes on), as production runs it; the system binaries are found and run
    (through ``runuser -u postgres`` as root) like the test fixture does.  None when there
    are no system binaries."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    from analytics_platform_tests.infra.postgres import find_system_bindir
    from analytics_platform_tests.infra.processes import free_port

    bindir = find_system_bindir()
    if bindir is None:
        return None
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
    data = base / "data"
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                             "-E", "UTF8", "--locale=C", "--no-instructions"],
                   check=True, capture_output=True)
    port = free_port()
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                             "-o", f"-h 127.0.0.1 -p {port} -k {base}", "start"],
                   check=True, capture_output=True)

    class Server:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"

        @staticmethod
        def stop() -> None:
            subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)
            shutil.rmtree(base, ignore_errors=True)

    return Server()


def _server():
    """(url, server or None, durability) — BENCH_POSTGRES_URL, else a throwaway cluster.

    ``BENCH_PG_DURABILITY=test`` uses the test fixture's server (fsync off: commits are
    nearly free, which flatters the commit-per-user baseline)."""
    url = os.environ.get("BENCH_POSTGRES_URL")
    if url:
        return url, None, "external"
    if os.environ.get("BENCH_PG_DURABILITY", "production") != "test":
        server = _start_durable_server()
        if server is not None:
            return server.url, server, "production (fsync on)"
    from analytics_platform_tests.infra.postgres import start_postgres

    server = start_postgres()
    return server.url, server, "test (fsync off)"


def run(scale: int, workdir: Path, baseline_scale: Optional[int] = None) -> list[Measurement]:
    url, server, durability = _server()
    engine = sa.create_engine(url, connect_args={"options": "-c timezone=UTC"})
    results: list[Measurement] = []
    try:
        started = time.perf_counter()
        counts = seed(engine, scale)
        seed_seconds = round(time.perf_counter() - started, 1)
        load = os.getloadavg()[0]

        with measure(NAME, "platform", scale, "learners") as m:
            result = recalculate(engine, _params(), run_id="bench")
        m.extra.update(
            inactive=result.inactive, processed=result.processed, inserted=result.inserted,
            updated=result.updated, exam_results=counts["exam_results"], seed_seconds=seed_seconds,
            load_avg_1m_before=round(load, 2), inner_duration_ms=result.duration_ms,
            postgres_durability=durability, cpus=os.cpu_count(),
        )
        results.append(m)

        # the baseline on a sample of the inactive users, extrapolated to all of them
        seed(engine, scale)  # the same starting state for the baseline
        sample = min(baseline_scale or DEFAULT_BASELINE_USERS, counts["inactive_expected"])
        with measure(NAME, "baseline", scale, "learners") as b:
            done, find_seconds, loop_seconds = baseline(engine, sample)
        measured = b.wall_seconds
        per_user = loop_seconds / max(done, 1)
        b.wall_seconds = find_seconds + per_user * counts["inactive_expected"]
        b.extra.update(
            measured_users=done, measured_seconds=round(measured, 2),
            find_seconds=round(find_seconds, 2), per_user_ms=round(per_user * 1000, 2),
            extrapolated_to_users=counts["inactive_expected"],
            note="find query measured once + per-user loop measured on a sample and extrapolated linearly",
            load_avg_1m_before=round(os.getloadavg()[0], 2), postgres_durability=durability,
        )
        results.append(b)
        m.extra["ratio_vs_baseline"] = round(b.wall_seconds / m.wall_seconds, 1)
    finally:
        engine.dispose()
        if server is not None:
            server.stop()
    return results
