"""Benchmark ``signals``: engagement signals + goal milestones for one daily partition,
set-based (the platform) vs a per-user loop (the old Lambda's shape).

    python -m benchmarks run signals                          # 100k users, 5M events (default)
    python -m benchmarks run signals --scale 20000 --baseline-scale 1000

``scale`` = users; 50 extracted events per user (5M at 100k), already in the warehouse
mirror ``engagement.firestore_app_usage_events`` (local default: DuckDB; the extraction is
not measured, the mirror is marked complete so no Firestore read happens). The events are
generated inside PostgreSQL (the old mirror's place, which the baseline reads) and copied
into DuckDB with one COPY + ``read_csv``. The data set per scale S
(deterministic: generated inside PostgreSQL with ``setseed`` + ``generate_series``): 30
goal sub-categories, 90 goals, 300 service apps (a third in two sub-categories); 75 % of
the users chose 1-3 goals (tier 1 or 2); each user's events are spread over ~10 weeks
ending 0-4 weeks before T, 70 % on an app aligned with the user's first goal, 20 % on a
random service app, 10 % on non-service apps.

* ``platform``: ``app_db/user_engagement_signals`` then ``app_db/user_milestones`` for the
  partition, materialized through Dagster (the aggregation in the warehouse, the goal
  tables read from PostgreSQL, vectorised rules, DELETE + COPY of the results in one
  PostgreSQL transaction each). Its PostgreSQL load is reported: statements sent by the
  platform (counted on its engine), rows written (``pg_stat_database`` deltas).
* ``baseline``: the evaluated users from one query, then per user: a query for their events,
  a query for their goals, the definitions evaluated event by event in Python
  (``engagement/reference.py``); the rows are upserted in one batch at the end (kinder than
  the Lambda, which read Firestore per user). It runs on the first ``baseline_scale`` users
  (default 2 000) and is extrapolated linearly to all evaluated users (see ``extra``); its
  results are compared with the platform's rows for those users.

* ``lambda_firestore`` (extra row, when the Firestore emulator is installed; skip with
  ``BENCH_SIGNALS_FIRESTORE=0``): the Lambda's real shape — per user, the events read from
  Firestore (``app_usage_events/{user}/events``, here the local emulator: no network, so a
  lower bound of the real thing) and the goals from PostgreSQL; measured on 200 users and
  extrapolated linearly. Its ratio is in the platform row's ``extra``.

PostgreSQL: ``BENCH_POSTGRES_URL`` when set (a scratch database: the engagement and goal
tables are dropped), else a throwaway server started like the test fixture does.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Optional

import dagster as dg
import sqlalchemy as sa

from analytics_platform.common import utc_now
from analytics_platform.engagement import store
from benchmarks import signals_reference as reference
from analytics_platform.engagement.assets import ASSETS, MILESTONES_KEY, SIGNALS_KEY
from analytics_platform.engagement.rules import MILESTONE_FLAGS, SIGNAL_COUNTS, SIGNAL_FLAGS, as_of_for_day
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.firestore import FirestoreResource
from analytics_platform.resources.local.firestore_export import LocalFirestore
from benchmarks.harness import Measurement, measure

NAME = "signals"
DEFAULT_SCALES = [100_000]
EVENTS_PER_USER = 50
DEFAULT_BASELINE_USERS = 2_000
DAY = dt.date(2024, 6, 5)
T = as_of_for_day(DAY)

SEED_SQL = """
SELECT setseed(0.6);
TRUNCATE user_engagement_signals, user_milestones;
DROP TABLE IF EXISTS firestore_app_usage_events, firestore_app_usage_event_rejects, extraction_cursors,
    user_engagement_aggregates, user_goals, app_goal_sub_categories, apps, goals,
    goal_sub_categories, bench_users CASCADE;
{goal_tables}
{legacy_mirror}
DROP INDEX IF EXISTS firestore_app_usage_events_user_ts;
INSERT INTO goal_sub_categories SELECT s, 'sub ' || s FROM generate_series(1, 30) s;
INSERT INTO goals SELECT g, 'goal ' || g, 1 + (g % 30) FROM generate_series(1, 90) g;
INSERT INTO apps SELECT a, 'com.bench.app' || a, 'App ' || a FROM generate_series(1, 300) a;
INSERT INTO app_goal_sub_categories
    SELECT a, 1 + (a % 30) FROM generate_series(1, 300) a
    UNION SELECT a, 1 + ((a * 7 + 3) % 30) FROM generate_series(1, 300) a WHERE a % 3 = 0 AND (a * 7 + 3) % 30 <> a % 30;
CREATE TABLE bench_users AS
SELECT i,
       'u' || lpad(i::text, 7, '0') AS user_id,
       1 + ((i * 7 + 13) % 90) AS first_goal,
       CASE WHEN random() < 0.7 THEN 0 WHEN random() < 0.5 THEN 1 ELSE 2 + (random() * 2)::int END AS idle_weeks
FROM generate_series(0, :users - 1) AS i;
INSERT INTO user_goals (user_id, goal_id, tier)
SELECT u.user_id, CASE WHEN k = 1 THEN u.first_goal ELSE 1 + ((u.i * 11 + k * 17) % 90) END, 1 + ((u.i + k) % 2)
FROM bench_users u, generate_series(1, 3) AS k
WHERE u.i % 4 <> 0 AND k <= 1 + (u.i % 3);
INSERT INTO firestore_app_usage_events
    (document_path, user_id, event_id, app_id, foreground_time_ms, session_id, event_timestamp, extracted_at)
SELECT 'app_usage_events/' || user_id || '/events/e' || e, user_id, 'e' || e,
       CASE WHEN r < 0.7 THEN 'com.bench.app' || (CASE WHEN s = 0 AND m = 0 THEN 300 ELSE s + 30 * m END)
            WHEN r < 0.9 THEN 'com.bench.app' || (1 + (random() * 299)::int)
            ELSE 'com.other.app' || (random() * 50)::int END,
       (power(random(), 3) * 400000)::bigint,
       's' || (random() * 9)::int,
       CAST(:t AS timestamptz) - make_interval(secs => 604800 * idle_weeks + random() * 604800 * 10),
       now()
FROM (
    SELECT u.user_id, u.idle_weeks, e, random() AS r, ((1 + (u.first_goal % 30)) - 1) AS s, (random() * 9)::int AS m
    FROM bench_users u, generate_series(1, :events_per_user) AS e
) x;
CREATE INDEX IF NOT EXISTS firestore_app_usage_events_user_ts ON firestore_app_usage_events (user_id, event_timestamp);
VACUUM ANALYZE
"""


# The old PostgreSQL mirror's table (the baseline reads it; the platform reads the warehouse).
LEGACY_MIRROR = """
CREATE TABLE firestore_app_usage_events (
    document_path TEXT PRIMARY KEY, user_id TEXT NOT NULL, event_id TEXT NOT NULL, app_id TEXT NOT NULL,
    foreground_time_ms BIGINT NOT NULL, session_id TEXT NOT NULL, event_timestamp TIMESTAMPTZ NOT NULL,
    extracted_at TIMESTAMPTZ NOT NULL);
"""
DATASET = "engagement"
SOURCE = "firestore:local-export:app_usage_events/*/events"


def copy_events_to_warehouse(db: AppDatabase, warehouse, workdir: Path) -> None:
    """The seeded events into the DuckDB mirror (one COPY out, one read_csv in), and the
    mirror's cursor marked complete (no Firestore read during the measurement)."""
    from analytics_platform.engagement import tables

    csv = workdir / "events.csv"
    engine = db.get_engine()
    with engine.connect() as conn, csv.open("wb") as fh:
        cur = conn.connection.dbapi_connection.cursor()
        cur.copy_expert(
            "COPY (SELECT document_path, user_id, event_id, app_id, foreground_time_ms, session_id, "
            "to_char(event_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "(event_timestamp AT TIME ZONE 'UTC')::date, to_char(extracted_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM firestore_app_usage_events) TO STDOUT WITH (FORMAT csv)", fh)
        cur.close()
    mirror = store.Mirror(warehouse, DATASET)
    mirror.ensure()
    with warehouse.connect() as con:
        con.execute(f'DELETE FROM "{DATASET}"."{tables.EVENTS_TABLE}"')
        con.execute(
            f'INSERT INTO "{DATASET}"."{tables.EVENTS_TABLE}" SELECT * FROM read_csv(?, header=false, columns={{'
            "'document_path': 'VARCHAR', 'user_id': 'VARCHAR', 'event_id': 'VARCHAR', 'app_id': 'VARCHAR', "
            "'foreground_time_ms': 'BIGINT', 'session_id': 'VARCHAR', 'event_timestamp': 'TIMESTAMPTZ', "
            "'event_date': 'DATE', 'extracted_at': 'TIMESTAMPTZ'})", [str(csv)])
    csv.unlink()
    far = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    mirror.write_cursor(SOURCE, store.StoredCursor(None, far, 0), utc_now())


class StatementCounter:
    """Statements the platform sends on an engine (COPY included)."""

    def __init__(self, engine) -> None:
        self.n = 0
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args, **kwargs) -> None:
        self.n += 1


def _pg_rows_written(db: AppDatabase) -> int:
    with db.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        return int(conn.execute(sa.text(
            "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()"
        )).scalar())


def seed(db: AppDatabase, users: int) -> dict:
    sql = SEED_SQL.replace("{goal_tables}", store.sql("goal_tables")).replace("{legacy_mirror}", LEGACY_MIRROR)
    statements = [s for s in sql.split(";\n") if s.strip()]
    engine = db.get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            params = {k: v for k, v in {"users": users, "events_per_user": EVENTS_PER_USER, "t": T}.items()
                      if f":{k}" in statement}
            conn.execute(sa.text(statement), params)
        counts = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("firestore_app_usage_events", "user_goals")
        }
    return counts


def evaluated_users(conn) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            sa.text(
                "SELECT user_id FROM user_goals UNION "
                "SELECT DISTINCT user_id FROM firestore_app_usage_events WHERE event_timestamp < :t ORDER BY 1"
            ),
            {"t": T},
        )
    ]


def baseline(db: AppDatabase, limit: int) -> tuple[int, float, float, dict]:
    """Per user: a query for the events, a query for the goals, Python evaluation; one
    batched upsert at the end. Returns (users done, find seconds, loop seconds, results)."""
    started = time.perf_counter()
    with db.connect() as conn:
        users = evaluated_users(conn)
        app_subs: dict[str, set] = {}
        for package, sub in conn.execute(
            sa.text("SELECT a.package_name, agsc.sub_category_id FROM apps a "
                    "LEFT JOIN app_goal_sub_categories agsc ON agsc.app_id = a.id")
        ):
            app_subs.setdefault(package, set())
            if sub is not None:
                app_subs[package].add(sub)
    find_seconds = time.perf_counter() - started
    total_users = len(users)
    sample = users[:limit]
    results = {}
    started = time.perf_counter()
    with db.connect() as conn:
        for user in sample:
            events = [
                reference.Event(app, fg, session, ts)
                for app, fg, session, ts in conn.execute(
                    sa.text("SELECT app_id, foreground_time_ms, session_id, event_timestamp "
                            "FROM firestore_app_usage_events WHERE user_id = :u AND event_timestamp < :t"),
                    {"u": user, "t": T},
                )
            ]
            goals = list(
                conn.execute(
                    sa.text("SELECT g.sub_category_id, ug.tier FROM user_goals ug JOIN goals g ON g.id = ug.goal_id "
                            "WHERE ug.user_id = :u"),
                    {"u": user},
                )
            )
            results[user] = reference.evaluate_user(events, [tuple(g) for g in goals], app_subs, T)
        now = utc_now()
        signal_cols = ["user_id", "as_of_date", *SIGNAL_FLAGS, *SIGNAL_COUNTS, "computed_at"]
        milestone_cols = ["user_id", "as_of_date", *MILESTONE_FLAGS, "computed_at"]

        def upsert(table, cols):
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[2:])
            return sa.text(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
                f"ON CONFLICT (user_id, as_of_date) DO UPDATE SET {updates}"
            )

        conn.execute(upsert(store.SIGNALS_TABLE, signal_cols), [
            {"user_id": u, "as_of_date": DAY, **r["signals"], **r["counts"], "computed_at": now} for u, r in results.items()
        ])
        conn.execute(upsert(store.MILESTONES_TABLE, milestone_cols), [
            {"user_id": u, "as_of_date": DAY, **r["milestones"], "computed_at": now} for u, r in results.items()
        ])
        conn.commit()
    return total_users, find_seconds, time.perf_counter() - started, results


FIRESTORE_SAMPLE_USERS = 200


def lambda_firestore(db: AppDatabase, workdir: Path, users: list[str]) -> Optional[tuple[float, int, float]]:
    """The Lambda's shape on ``users``: events per user from the Firestore emulator, goals per
    user from PostgreSQL. Returns (seconds per user, users, setup seconds) or None."""
    if os.environ.get("BENCH_SIGNALS_FIRESTORE", "1") == "0":
        return None
    try:
        from analytics_platform_tests.infra.firestore import start_firestore_emulator
    except ImportError:
        return None
    try:
        emulator = start_firestore_emulator(workdir)
    except (FileNotFoundError, RuntimeError):
        return None
    try:
        fs = FirestoreResource(emulator_host=emulator.host, project_id="bench-signals")
        started = time.perf_counter()
        with db.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT user_id, event_id, app_id, foreground_time_ms, session_id, event_timestamp "
                        "FROM firestore_app_usage_events WHERE user_id = ANY(:u)"),
                {"u": users},
            ).all()
        fs.write_documents(
            {"path": f"app_usage_events/{u}/events/{e}",
             "fields": {"app_id": a, "foreground_time_ms": fg, "session_id": s, "timestamp": ts}}
            for u, e, a, fg, s, ts in rows
        )
        setup = time.perf_counter() - started
        client = fs.get_client()
        with db.connect() as conn:
            app_subs: dict[str, set] = {}
            for package, sub in conn.execute(
                sa.text("SELECT a.package_name, agsc.sub_category_id FROM apps a "
                        "LEFT JOIN app_goal_sub_categories agsc ON agsc.app_id = a.id")
            ):
                app_subs.setdefault(package, set())
                if sub is not None:
                    app_subs[package].add(sub)
            started = time.perf_counter()
            for user in users:
                events = []
                for snap in client.collection("app_usage_events").document(user).collection("events").stream():
                    f = snap.to_dict()
                    events.append(reference.Event(f["app_id"], f["foreground_time_ms"], f["session_id"], f["timestamp"]))
                goals = [tuple(g) for g in conn.execute(
                    sa.text("SELECT g.sub_category_id, ug.tier FROM user_goals ug JOIN goals g ON g.id = ug.goal_id "
                            "WHERE ug.user_id = :u"), {"u": user})]
                reference.evaluate_user(events, goals, app_subs, T)
            per_user = (time.perf_counter() - started) / max(len(users), 1)
        return per_user, len(users), setup
    finally:
        emulator.stop()


def _server():
    url = os.environ.get("BENCH_POSTGRES_URL")
    if url:
        return url, None
    from analytics_platform_tests.infra.postgres import start_postgres

    server = start_postgres()
    return server.url, server


def _postmaster(url: str):
    """The local PostgreSQL server process of ``url`` (for its CPU time), or None."""
    import psutil
    from sqlalchemy.engine import make_url

    port = str(make_url(url).port or 5432)
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["name"] in ("postgres", "postmaster") and any(
                a == port or a.endswith(f"={port}") for a in cmd
            ) and (proc.parent() is None or proc.parent().name() not in ("postgres", "postmaster")):
                return proc
        except psutil.Error:
            continue
    return None


def _db_cpu_seconds(postmaster) -> Optional[float]:
    """CPU seconds used so far by the server: postmaster, its exited children, live children."""
    import psutil

    if postmaster is None:
        return None
    try:
        t = postmaster.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in postmaster.children():
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None


def _platform_rows(db: AppDatabase, users: list[str]) -> dict:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT s.*, {', '.join('m.' + f for f in MILESTONE_FLAGS)} FROM user_engagement_signals s "
                "JOIN user_milestones m USING (user_id, as_of_date) WHERE s.as_of_date = :d AND s.user_id = ANY(:u)"
            ),
            {"d": DAY, "u": users},
        ).mappings()
        return {r["user_id"]: dict(r) for r in rows}


def run(scale: int, workdir: Path, baseline_scale: Optional[int] = None) -> list[Measurement]:
    url, server = _server()
    db = AppDatabase(url=url)
    results: list[Measurement] = []
    try:
        started = time.perf_counter()
        from analytics_platform import migrations
        from analytics_platform.resources.warehouse import DuckDBWarehouse

        migrations.upgrade(url)  # the results' tables (signals, milestones)
        counts = seed(db, scale)
        warehouse = DuckDBWarehouse(path=str(workdir / "signals_bench.duckdb"))
        copy_events_to_warehouse(db, warehouse, workdir)
        seed_seconds = round(time.perf_counter() - started, 1)
        load = os.getloadavg()[0]

        postmaster = _postmaster(url)
        export = workdir / "empty.jsonl"
        export.write_text("")
        resources = {"app_db": db, "warehouse": warehouse,
                     "firestore": LocalFirestore(local_export_path=str(export))}
        counter = StatementCounter(db.get_engine())
        time.sleep(1)
        rows_before = _pg_rows_written(db)
        counter.n = 0
        cpu_before = _db_cpu_seconds(postmaster)
        with measure(NAME, "platform", scale, "users") as m:
            outcome = dg.materialize(
                assets=ASSETS,
                selection=dg.AssetSelection.assets(SIGNALS_KEY, MILESTONES_KEY),
                partition_key=DAY.isoformat(),
                resources=resources,
                instance=dg.DagsterInstance.ephemeral(),
            )
        cpu_after = _db_cpu_seconds(postmaster)
        statements = counter.n
        time.sleep(1)  # pg_stat_database is flushed by the backends with a short delay
        rows_written = _pg_rows_written(db) - rows_before
        step_seconds = {
            e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
            for e in outcome.all_events if e.event_type_value == "STEP_SUCCESS"
        }
        with db.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM user_engagement_signals")).scalar()
        m.extra.update(
            events=counts["firestore_app_usage_events"], user_goals=counts["user_goals"], rows_per_table=rows,
            step_seconds=step_seconds, seed_seconds=seed_seconds, load_avg_1m_before=round(load, 2),
            db_cpu_seconds=round(cpu_after - cpu_before, 1) if cpu_before is not None else None,
            pg_statements=statements, pg_rows_written=rows_written, warehouse="duckdb",
        )
        results.append(m)
        if os.environ.get("BENCH_SIGNALS_BASELINE", "1") == "0":
            return results

        sample = baseline_scale or DEFAULT_BASELINE_USERS
        with db.connect() as conn:
            platform = _platform_rows(db, evaluated_users(conn)[:sample])  # before the baseline overwrites them
        load = os.getloadavg()[0]
        cpu_before = _db_cpu_seconds(postmaster)
        with measure(NAME, "baseline", scale, "users") as b:
            total_users, find_seconds, loop_seconds, base = baseline(db, sample)
        cpu_after = _db_cpu_seconds(postmaster)
        done = len(base)
        measured = b.wall_seconds
        per_user = loop_seconds / max(done, 1)
        b.wall_seconds = find_seconds + per_user * total_users
        mismatches = sum(
            1
            for u, r in base.items()
            if u not in platform
            or any(platform[u][f] != r["signals"][f] for f in SIGNAL_FLAGS)
            or any(platform[u][c] != r["counts"][c] for c in SIGNAL_COUNTS)
            or any(platform[u][f] != r["milestones"][f] for f in MILESTONE_FLAGS)
        )
        b.extra.update(
            measured_users=done, measured_seconds=round(measured, 2), find_seconds=round(find_seconds, 2),
            per_user_ms=round(per_user * 1000, 3), extrapolated_to_users=total_users,
            note="find query measured once + per-user loop measured on a sample, extrapolated linearly",
            load_avg_1m_before=round(load, 2),
            db_cpu_seconds_measured=round(cpu_after - cpu_before, 1) if cpu_before is not None else None,
        )
        results.append(b)
        m.extra["ratio_vs_baseline"] = round(b.wall_seconds / m.wall_seconds, 1)

        with db.connect() as conn:
            everyone = evaluated_users(conn)
        lam = lambda_firestore(db, workdir, everyone[:FIRESTORE_SAMPLE_USERS])
        if lam is not None:
            per_user, measured_users, setup = lam
            f = Measurement(NAME, "lambda_firestore", scale, "users", find_seconds + per_user * len(everyone), 0.0)
            f.extra.update(
                measured_users=measured_users, per_user_ms=round(per_user * 1000, 2), setup_seconds=round(setup, 1),
                extrapolated_to_users=len(everyone),
                note="per-user Firestore (local emulator) reads + per-user goals query, extrapolated linearly",
            )
            results.append(f)
            m.extra["ratio_vs_lambda_firestore"] = round(f.wall_seconds / m.wall_seconds, 1)
        m.extra["baseline_sample_mismatches"] = mismatches
    finally:
        if db._engine is not None:
            db._engine.dispose()
        if server is not None:
            server.stop()
    return results
