"""One-off move of the Firestore mirror that earlier versions kept in the application
PostgreSQL (``firestore_app_usage_events``, ``firestore_app_usage_event_rejects``,
``extraction_cursors``) into the warehouse (``ENGAGEMENT_DATASET``), so the next run
continues from the same cursor without re-reading Firestore::

    python -m analytics_platform.engagement.move_mirror            # copy, verify counts
    python -m analytics_platform.engagement.move_mirror --drop-source  # then drop the old tables

Re-runnable: rows are upserted by document path (cursors by source), so a repeated or
interrupted move never duplicates. ``--drop-source`` needs a role that owns the old tables
and drops them only after the warehouse holds at least as many rows. The old
``user_engagement_aggregates`` table is only dropped (the next signals run recomputes it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import pandas as pd
import sqlalchemy as sa

from analytics_platform.engagement import store, tables
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.warehouse import Warehouse

OLD_TABLES = ("firestore_app_usage_events", "firestore_app_usage_event_rejects", "extraction_cursors")
OLD_DERIVED_TABLES = ("user_engagement_aggregates",)
CHUNK = 100_000

_LOG = logging.getLogger(__name__)


@dataclass
class MoveResult:
    events: int = 0
    rejects: int = 0
    cursors: int = 0
    dropped: tuple[str, ...] = ()


def _exists(conn: sa.Connection, table: str) -> bool:
    return bool(conn.execute(sa.text(store.sql("check_table_exists")), {"n": f"public.{table}"}).scalar())


def move_mirror(app_db: AppDatabase, warehouse: Warehouse, dataset: str, drop_source: bool = False,
                chunk: int = CHUNK) -> MoveResult:
    """Copy the old PostgreSQL mirror into the warehouse mirror; see the module docstring."""
    mirror = store.Mirror(warehouse, dataset)
    mirror.ensure()
    result = MoveResult()
    with app_db.connect() as conn:
        present = {t for t in OLD_TABLES + OLD_DERIVED_TABLES if _exists(conn, t)}
        if "firestore_app_usage_events" in present:
            after = ""
            while True:
                frame = store.copy_out(conn, store.sql("move_events_chunk"), {"after": after, "n": chunk},
                                       string_columns=("document_path", "user_id", "event_id", "app_id", "session_id"))
                if frame.empty:
                    break
                frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
                frame["extracted_at"] = pd.to_datetime(frame["extracted_at"], utc=True)
                frame["event_date"] = frame["event_timestamp"].dt.date
                warehouse.load(frame, dataset, tables.EVENTS_TABLE, tables.EVENTS_SCHEMA, "merge",
                               key_columns=("document_path",))
                result.events += len(frame)
                after = frame["document_path"].iloc[-1]
        if "firestore_app_usage_event_rejects" in present:
            frame = store.copy_out(conn, store.sql("move_rejects"), {},
                                   string_columns=("document_path", "user_id", "event_id", "reasons", "raw_fields"))
            if not frame.empty:
                for c in ("event_timestamp", "first_seen_at", "last_seen_at"):
                    frame[c] = pd.to_datetime(frame[c], utc=True)
                warehouse.load(frame, dataset, tables.REJECTS_TABLE, tables.REJECTS_SCHEMA, "merge",
                               key_columns=("document_path",))
            result.rejects = len(frame)
        if "extraction_cursors" in present:
            frame = store.copy_out(conn, store.sql("move_cursors"), {},
                                   string_columns=("source", "cursor_document_path"))
            if not frame.empty:
                for c in ("cursor_timestamp", "updated_at"):
                    frame[c] = pd.to_datetime(frame[c], utc=True)
                frame["complete_until"] = None  # unknown: the next run reads from the cursor
                warehouse.load(frame, dataset, tables.CURSORS_TABLE, tables.CURSORS_SCHEMA, "merge",
                               key_columns=("source",))
            result.cursors = len(frame)
    if result.events and mirror.count(tables.EVENTS_TABLE) < result.events:
        raise RuntimeError("the warehouse mirror holds fewer events than were moved: the source is kept")
    if drop_source and present:
        with app_db.begin() as conn:
            for table in sorted(present):
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS public."{table}"')
        result.dropped = tuple(sorted(present))
    _LOG.info("moved %s", result)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    from analytics_platform.resources import build_resources
    from analytics_platform.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m analytics_platform.engagement.move_mirror", description=__doc__)
    parser.add_argument("--drop-source", action="store_true", help="drop the old PostgreSQL tables after the copy")
    args = parser.parse_args(argv)
    settings = get_settings()
    resources = build_resources(settings, secrets_as_env_vars=False)
    result = move_mirror(resources["app_db"], resources["warehouse"], settings.engagement_dataset, args.drop_source)
    print(f"moved {result.events} event(s), {result.rejects} reject(s), {result.cursors} cursor(s) into "
          f"{resources['warehouse'].engine} {settings.engagement_dataset}"
          + (f"; dropped {', '.join(result.dropped)}" if result.dropped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
