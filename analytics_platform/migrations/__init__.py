"""Versioned migrations (Alembic) of the tables this platform owns in the application
PostgreSQL: ``user_engagement_signals``, ``user_milestones``, the kpis bookkeeping
(``weekly_kpi_recalc_runs``, ``weekly_kpi_churn_alerts``) and the Mixpanel export budget
ledger (``mixpanel_export_budget``). The application's own tables
(goals, apps, ``weekly_kpi``, exam results ...) are not touched.

Run them with an owner role (the runtime role needs no CREATE on ``public``)::

    python -m analytics_platform.migrations upgrade            # to the newest revision
    python -m analytics_platform.migrations upgrade --grant-to analytics_runtime
    python -m analytics_platform.migrations downgrade base     # drop what the platform owns
    python -m analytics_platform.migrations current | history

The database is ``APP_DATABASE_URL`` (or ``--url``); unset, the local embedded PostgreSQL,
which :class:`~analytics_platform.resources.app_db.AppDatabase` also migrates by itself on
first use. The revision table is ``analytics_platform_alembic_version`` (not Alembic's
default ``alembic_version``, which the application may use for its own migrations).

Adding a revision: a new file in ``versions/`` with ``revision = "NNNN_name"``,
``down_revision`` = the previous head, ``upgrade()`` / ``downgrade()`` using
``op.execute``; list the new tables in ``OWNED_TABLES`` (what ``--grant-to`` grants).
The runtime calls :func:`require_current` and refuses to run on an older schema.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import sqlalchemy as sa

VERSION_TABLE = "analytics_platform_alembic_version"
HERE = Path(__file__).resolve().parent
COMMAND = "python -m analytics_platform.migrations upgrade"

# Every table the migrations create, in creation order (what --grant-to grants DML on).
OWNED_TABLES = (
    "user_engagement_signals",
    "user_milestones",
    "weekly_kpi_recalc_runs",
    "weekly_kpi_churn_alerts",
    "mixpanel_export_budget",
)

_CHECKED: set[str] = set()
_CHECKED_LOCK = threading.Lock()


class SchemaNotMigrated(RuntimeError):
    """The application database lacks the platform's tables (or an older revision of them)."""


def config(url: Optional[str] = None):
    """The Alembic ``Config`` of this package (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def _run(command_name: str, url: str, *args) -> None:
    from alembic import command

    from analytics_platform.resources.app_db import normalise_url

    getattr(command, command_name)(config(normalise_url(url)), *args)


def upgrade(url: str, revision: str = "head", grant_to: Optional[str] = None) -> None:
    """Migrate the database at ``url`` up to ``revision``; ``grant_to``: a role that then
    gets SELECT/INSERT/UPDATE/DELETE on every owned table (and SELECT on the version table)."""
    _run("upgrade", url, revision)
    if grant_to:
        grant(url, grant_to)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base``: drop every owned table)."""
    _run("downgrade", url, revision)


def grant(url: str, role: str) -> None:
    """DML on the owned tables that exist, and SELECT on the version table, for ``role``."""
    from analytics_platform.common import validate_identifier
    from analytics_platform.resources.app_db import normalise_url

    role = validate_identifier(role)
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            for table in (*OWNED_TABLES, VERSION_TABLE):
                if conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"public.{table}"}).scalar():
                    rights = "SELECT" if table == VERSION_TABLE else "SELECT, INSERT, UPDATE, DELETE"
                    conn.exec_driver_sql(f'GRANT {rights} ON public."{table}" TO "{role}"')
    finally:
        engine.dispose()


def current_revision(conn: sa.Connection) -> Optional[str]:
    """The revision the database is at (None: never migrated)."""
    exists = conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"public.{VERSION_TABLE}"}).scalar()
    if not exists:
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def require_current(conn: sa.Connection) -> None:
    """Raise :class:`SchemaNotMigrated` (naming the command) unless the database is at the
    newest revision; checked once per database per process."""
    key = str(conn.engine.url)
    if key in _CHECKED:
        return
    at, newest = current_revision(conn), head()
    if at != newest:
        raise SchemaNotMigrated(
            f"The application database is at migration {at or '(none)'}, this code needs {newest}: "
            f"run `{COMMAND}` with a role that may create tables (see docs/engagement.md, 'Migrations')."
        )
    with _CHECKED_LOCK:
        _CHECKED.add(key)
