"""AppDatabase: the embedded PostgreSQL of the local default and a real server by URL.

Acceptance item 7: the local embedded PostgreSQL starts from nothing and is reused on the
next run (a new process, with the server still running or stopped in between).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from analytics_platform.resources.app_db import AppDatabase, normalise_url
from analytics_platform.settings import SettingsError
from analytics_platform_tests.infra.postgres import SERVER_TIMEZONE, stop_embedded_postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
NEW_YORK = dt.timezone(dt.timedelta(hours=-5))


@pytest.fixture
def embedded_dir(embedded_pg_dir):
    """A fresh directory for an embedded server (see conftest: not under tmp_path)."""
    return embedded_pg_dir


def _in_new_process(embedded_dir: Path, code: str) -> dict:
    """Run ``code`` in a fresh interpreter (a "next run") with ``db`` bound; return its JSON."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import sqlalchemy as sa
        from analytics_platform.resources.app_db import AppDatabase
        db = AppDatabase(url=None, embedded_dir={str(embedded_dir)!r})
        out = {{}}
        """
    ) + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(out, default=str))\n"
    env = {k: v for k, v in os.environ.items() if k not in ("APP_DATABASE_URL",)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_embedded_postgres_starts_from_nothing_and_is_reused(embedded_dir):
    assert not embedded_dir.exists()
    db = AppDatabase(url=None, embedded_dir=str(embedded_dir))
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS goals (user_id text PRIMARY KEY, target int)"))
        conn.execute(sa.text("INSERT INTO goals VALUES ('u1', 3)"))
    assert (embedded_dir / "PG_VERSION").exists()
    assert db.table_exists("goals")
    assert not db.table_exists("nope")
    assert db.get_engine().dialect.driver == "psycopg2"

    # a second resource on the same directory (same process) sees the same data
    again = AppDatabase(url=None, embedded_dir=str(embedded_dir))
    assert again.resolved_url() == db.resolved_url()
    with again.connect() as conn:
        assert conn.execute(sa.text("SELECT target FROM goals WHERE user_id = 'u1'")).scalar() == 3

    # the next run (a new process) reuses the running server and its data
    out = _in_new_process(
        embedded_dir,
        """
        with db.begin() as conn:
            out["rows"] = [list(r) for r in conn.execute(sa.text("SELECT user_id, target FROM goals ORDER BY 1"))]
            conn.execute(sa.text("INSERT INTO goals VALUES ('u2', 5)"))
        out["url"] = db.resolved_url()
        """,
    )
    assert out["rows"] == [["u1", 3]]
    assert out["url"] == db.resolved_url()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM goals")).scalar() == 2


def test_embedded_postgres_restarts_on_existing_data(embedded_dir):
    db = AppDatabase(url=None, embedded_dir=str(embedded_dir))
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kpi (week date PRIMARY KEY, p float)"))
        conn.execute(sa.text("INSERT INTO kpi VALUES ('2024-01-01', 0.5)"))
    db.get_engine().dispose()

    # e.g. the machine rebooted: the server is gone, the data directory is not
    assert stop_embedded_postgres(embedded_dir)
    assert not (embedded_dir / "postmaster.pid").exists()

    out = _in_new_process(
        embedded_dir,
        """
        with db.connect() as conn:
            out["rows"] = [list(r) for r in conn.execute(sa.text("SELECT week::text, p FROM kpi"))]
        """,
    )
    assert out["rows"] == [["2024-01-01", 0.5]]

    # this process cached the old server: it notices it died and uses the new one
    with AppDatabase(url=None, embedded_dir=str(embedded_dir)).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM kpi")).scalar() == 1


def _session_facts(db: AppDatabase) -> dict:
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS ev (id int, at timestamptz)"))
        conn.execute(sa.text("DELETE FROM ev"))
        conn.execute(
            sa.text("INSERT INTO ev VALUES (1, :at)"),
            {"at": dt.datetime(2024, 3, 9, 22, 30, tzinfo=NEW_YORK)},  # 03:30 UTC on the 10th
        )
        row = conn.execute(
            sa.text(
                "SELECT current_setting('TimeZone') AS tz, at, at::date AS day, "
                "date_trunc('day', at) AS day_start, to_char(at, 'YYYY-MM-DD HH24:MI TZ') AS text, "
                "EXTRACT(timezone FROM now()) AS offset FROM ev"
            )
        ).mappings().one()
    return dict(row)


def _assert_utc_session(facts: dict) -> None:
    assert facts["tz"] == "UTC"
    assert facts["at"] == dt.datetime(2024, 3, 10, 3, 30, tzinfo=dt.timezone.utc)
    assert facts["at"].utcoffset() == dt.timedelta(0)
    assert facts["day"] == dt.date(2024, 3, 10)
    assert facts["day_start"] == dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)
    assert facts["text"] == "2024-03-10 03:30 UTC"
    assert float(facts["offset"]) == 0.0


@pytest.fixture
def new_york_process(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    monkeypatch.setenv("PGTZ", "America/New_York")  # libpq would send this to the server
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_embedded_sessions_are_utc(embedded_dir, new_york_process):
    _assert_utc_session(_session_facts(AppDatabase(url=None, embedded_dir=str(embedded_dir))))


def test_app_db_on_a_server_url_is_utc_whatever_the_server_default(app_db, app_db_url, new_york_process):
    # the throwaway server's own default is not UTC
    engine = sa.create_engine(app_db_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW TimeZone")).scalar() == SERVER_TIMEZONE
    engine.dispose()
    _assert_utc_session(_session_facts(app_db))


def test_app_db_by_url(postgres_url, app_db, app_db_url):
    assert postgres_url.startswith("postgresql+psycopg2://")
    assert app_db.resolved_url() == app_db_url
    app_db.run_script(
        """
        CREATE TABLE IF NOT EXISTS weekly_kpi (week_start date PRIMARY KEY, p double precision);
        CREATE INDEX IF NOT EXISTS weekly_kpi_p ON weekly_kpi (p);
        """
    )
    app_db.run_script("CREATE TABLE IF NOT EXISTS weekly_kpi (week_start date PRIMARY KEY, p double precision);")
    assert app_db.table_exists("weekly_kpi")

    # one transaction: all or nothing
    with pytest.raises(sa.exc.IntegrityError):
        with app_db.begin() as conn:
            conn.execute(sa.text("INSERT INTO weekly_kpi VALUES ('2024-01-01', 0.1)"))
            conn.execute(sa.text("INSERT INTO weekly_kpi VALUES ('2024-01-01', 0.2)"))
    with app_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM weekly_kpi")).scalar() == 0

    # a plain postgresql:// URL gets the psycopg2 driver (SQLAlchemy 2.1 defaults to psycopg 3)
    plain = "postgresql://" + app_db_url.split("://", 1)[1]
    assert normalise_url(plain) == app_db_url
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    other = AppDatabase(url=plain)
    with other.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar() == sa.make_url(app_db_url).database
    assert other.get_engine() is app_db.get_engine()  # one pool per URL per process


def test_app_db_urls_are_isolated_per_test(app_db):
    assert not app_db.table_exists("weekly_kpi")


def test_prod_without_url_fails_naming_the_variable():
    db = AppDatabase(url=None, require_url=True)
    with pytest.raises(SettingsError, match="APP_DATABASE_URL"):
        db.setup_for_execution(None)


def test_make_stop_stops_the_embedded_server_and_keeps_its_data(embedded_dir):
    """`make stop` (= python -m analytics_platform.demo --stop): the embedded server under
    ANALYTICS_DATA_DIR/postgres is stopped, its data stay, the next use starts it again."""
    from analytics_platform.resources.app_db import stop_embedded_postgres

    server_dir = embedded_dir / "postgres"
    db = AppDatabase(url=None, embedded_dir=str(server_dir))
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (v int)"))
        conn.execute(sa.text("INSERT INTO kept VALUES (7)"))
    db.get_engine().dispose()
    assert (server_dir / "postmaster.pid").exists()

    out = subprocess.run(
        [sys.executable, "-m", "analytics_platform.demo", "--stop"],
        env={**os.environ, "ANALYTICS_DATA_DIR": str(embedded_dir)},
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0 and "embedded PostgreSQL stopped" in out.stdout, out.stderr
    assert not (server_dir / "postmaster.pid").exists()
    assert stop_embedded_postgres(server_dir) is False  # nothing left to stop

    # the next run (make dev, the demo: a new process) starts it again on the same data
    out = _in_new_process(server_dir, """
        with db.connect() as conn:
            out["v"] = conn.execute(sa.text("SELECT v FROM kept")).scalar()
        """)
    assert out["v"] == 7
    assert stop_embedded_postgres(server_dir) is True
