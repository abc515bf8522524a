"""``python -m analytics_platform.migrations upgrade|downgrade|current|history`` (see the
package docstring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from analytics_platform import migrations


def _default_url() -> str:
    """APP_DATABASE_URL, else the local embedded PostgreSQL (started if needed)."""
    from analytics_platform.resources.app_db import embedded_postgres_url
    from analytics_platform.settings import get_settings

    settings = get_settings()
    if settings.app_database_url:
        return settings.app_database_url
    if settings.is_prod:
        raise SystemExit("ANALYTICS_ENV=prod needs APP_DATABASE_URL (or --url)")
    return embedded_postgres_url(Path(settings.data_dir) / "postgres")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics_platform.migrations", description=__doc__)
    parser.add_argument("--url", help="SQLAlchemy URL (default: APP_DATABASE_URL, else the embedded PostgreSQL)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="migrate up (default: to the newest revision)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--grant-to", metavar="ROLE", help="grant the runtime ROLE DML on the owned tables")
    down = sub.add_parser("downgrade", help="migrate down to REVISION (base: drop every owned table)")
    down.add_argument("revision")
    sub.add_parser("current", help="print the revision of the database")
    sub.add_parser("history", help="list the revisions")
    args = parser.parse_args(argv)

    if args.command == "history":
        from alembic import command

        command.history(migrations.config())
        return 0
    url = args.url or _default_url()
    if args.command == "upgrade":
        migrations.upgrade(url, args.revision, grant_to=args.grant_to)
    elif args.command == "downgrade":
        migrations.downgrade(url, args.revision)
    import sqlalchemy as sa

    from analytics_platform.resources.app_db import normalise_url

    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            print(f"revision: {migrations.current_revision(conn) or '(none)'} (newest: {migrations.head()})")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
