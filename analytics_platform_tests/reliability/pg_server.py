"""A dedicated throwaway PostgreSQL that a test may restart and crash (never the session one).

Same recipe as ``analytics_platform_tests.infra.postgres`` (system binaries, ``runuser -u
postgres`` as root, fsync off — but synchronous commit on: a crash must not lose commits), plus what the reliability tests need: a fixed port for
the server's whole life (so URLs survive restarts), ``restart()`` (clean stop + start) and
``crash()`` (SIGKILL of the postmaster and every backend: what a host or OOM kill does; the
next ``start()`` runs crash recovery).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import psutil
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from analytics_platform_tests.infra.postgres import _run, find_system_bindir
from analytics_platform_tests.infra.processes import free_port, start_watchdog, stop_watchdog


class RestartablePostgres:
    def __init__(self) -> None:
        bindir = find_system_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL system binaries (initdb/pg_ctl) found")
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="analytics-pg-reliability-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.prefix = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
        os.chmod(self.base, 0o700)
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        _run(
            self.prefix + [str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                           "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            self.base, "initdb",
        )
        self._watchdog = None
        self.start()
        pid_file = self.data / "postmaster.pid"
        self._watchdog = start_watchdog(f"kill -9 $(head -1 '{pid_file}') 2>/dev/null; sleep 2; rm -rf '{self.base}'")

    # ------------------------------------------------------------------ lifecycle
    def _pg_ctl(self, *args: str) -> None:
        _run(self.prefix + [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], self.base, "pg_ctl " + args[-1], self.log)

    def start(self) -> None:
        options = (
            # fsync off is safe against a process kill (the OS keeps the pages); synchronous
            # commit stays ON, otherwise a crash would lose transactions already committed
            f"-h 127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
            "-c max_connections=100 -c shared_buffers=16MB"
        )
        self._pg_ctl("-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    def restart(self) -> None:
        """A clean restart: every open connection is closed by the server."""
        self._pg_ctl("-m", "fast", "-w", "stop")
        self.start()

    def postmaster_pid(self) -> Optional[int]:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash(self) -> None:
        """SIGKILL the postmaster and all its backends; uncommitted work is lost."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            victims = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for victim in victims:
            try:
                victim.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        except Exception:  # noqa: BLE001 - already down
            self.crash()
        stop_watchdog(self._watchdog)
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ databases
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"rel_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        from analytics_platform import migrations

        migrations.upgrade(self.url(name))  # as a deployment does before the runtime connects
        return self.url(name)


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        engine.dispose()
