"""Fixtures of the engagement domain: an application database with the goal tables and a
warehouse (DuckDB by default; ``eng_db_on_warehouse`` runs on both engines), helpers to write
events (straight into the warehouse mirror, or as Firestore documents), and to materialize
the domain's assets the way Dagster runs them."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import tempfile
from typing import Any, Iterable, Optional

import dagster as dg
import pytest
import sqlalchemy as sa

import pandas as pd

from analytics_platform.common import UTC
from analytics_platform.engagement import store, tables
from analytics_platform.engagement.assets import ASSETS, MILESTONES_OP, SIGNALS_OP
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.firestore import FirestoreResource
from analytics_platform.resources.local.firestore_export import LocalFirestore

DAY = "2024-06-05"  # the partition used by most tests
T = dt.datetime(2024, 6, 6, tzinfo=UTC)  # its as-of: the end of DAY
WEEK = dt.timedelta(days=7)
MS = dt.timedelta(milliseconds=1)

# A small goal world: sub-category -> goal -> apps.
FITNESS, SLEEP, FINANCE = 1, 2, 3
GOAL_FITNESS, GOAL_SLEEP, GOAL_FINANCE = 10, 20, 30
FIT_APP, FIT_APP_2, SLEEP_APP, MONEY_APP = "com.fit.app", "com.fit.other", "com.sleep.app", "com.money.app"
NON_SERVICE_APP = "com.random.game"  # not in `apps`


DATASET = "engagement"  # the default ENGAGEMENT_DATASET
# app_db -> the warehouse of the same test (so ``materialize(world.app_db, ...)`` finds it)
_WAREHOUSE_OF: dict[int, Any] = {}


class EngagementDb:
    """The application database and warehouse of one test, with goal tables and helpers."""

    def __init__(self, app_db: AppDatabase, warehouse: Any = None) -> None:
        self.app_db = app_db
        self.warehouse = warehouse
        self.mirror = store.Mirror(warehouse, DATASET) if warehouse is not None else None
        if warehouse is not None:
            _WAREHOUSE_OF[id(app_db)] = warehouse
        self._ids = itertools.count(1)

    def run(self, sql: str, params: Optional[Any] = None) -> None:
        with self.app_db.begin() as conn:
            conn.execute(sa.text(sql), params or {})

    def seed_world(self) -> "EngagementDb":
        """Sub-categories, goals and service apps of the standard test world."""
        self.run(
            "INSERT INTO goal_sub_categories (id, name) VALUES (:id, :name)",
            [{"id": FITNESS, "name": "Fitness"}, {"id": SLEEP, "name": "Sleep"}, {"id": FINANCE, "name": "Finance"}],
        )
        self.run(
            "INSERT INTO goals (id, name, sub_category_id) VALUES (:id, :name, :sub)",
            [
                {"id": GOAL_FITNESS, "name": "Get fit", "sub": FITNESS},
                {"id": GOAL_SLEEP, "name": "Sleep better", "sub": SLEEP},
                {"id": GOAL_FINANCE, "name": "Save money", "sub": FINANCE},
            ],
        )
        apps = [(1, FIT_APP, FITNESS), (2, FIT_APP_2, FITNESS), (3, SLEEP_APP, SLEEP), (4, MONEY_APP, FINANCE)]
        self.run(
            "INSERT INTO apps (id, package_name, name) VALUES (:id, :package, :package)",
            [{"id": i, "package": p} for i, p, _ in apps],
        )
        self.run(
            "INSERT INTO app_goal_sub_categories (app_id, sub_category_id) VALUES (:app, :sub)",
            [{"app": i, "sub": s} for i, _, s in apps],
        )
        return self

    def goal(self, user_id: str, goal_id: int, tier: int = 1) -> None:
        self.run(
            "INSERT INTO user_goals (user_id, goal_id, tier) VALUES (:u, :g, :t)",
            {"u": user_id, "g": goal_id, "t": tier},
        )

    def events(self, rows: Iterable[dict]) -> int:
        """Insert mirrored events directly into the warehouse: dicts with user_id, app_id, ts
        and optional fg (foreground_time_ms, default 1000) and session (default 's1')."""
        values = []
        now = dt.datetime.now(UTC)
        for row in rows:
            n = next(self._ids)
            values.append(
                {
                    "document_path": f"app_usage_events/{row['user_id']}/events/ev{n:06d}",
                    "user_id": row["user_id"],
                    "event_id": f"ev{n:06d}",
                    "app_id": row["app_id"],
                    "foreground_time_ms": row.get("fg", 1000),
                    "session_id": row.get("session", "s1"),
                    "event_timestamp": row["ts"],
                    "event_date": row["ts"].astimezone(UTC).date(),
                    "extracted_at": now,
                }
            )
        if values:
            self.mirror.ensure()
            self.warehouse.load(
                pd.DataFrame(values), DATASET, tables.EVENTS_TABLE, tables.EVENTS_SCHEMA, "append"
            )
        return len(values)

    def mirror_table(self, table: str = tables.EVENTS_TABLE) -> pd.DataFrame:
        """Every row of a warehouse table of the domain."""
        from analytics_platform.common import validate_identifier

        return self.warehouse.query(f"SELECT * FROM `{DATASET}.{validate_identifier(table)}`")

    def event(self, user_id: str, app_id: str, ts: dt.datetime, fg: int = 1000, session: str = "s1") -> None:
        self.events([{"user_id": user_id, "app_id": app_id, "ts": ts, "fg": fg, "session": session}])

    def rows(self, table: str, day: str = DAY) -> dict[str, dict]:
        with self.app_db.connect() as conn:
            result = conn.execute(
                sa.text(f"SELECT * FROM {table} WHERE as_of_date = :d ORDER BY user_id"),
                {"d": dt.date.fromisoformat(day)},
            )
            return {r["user_id"]: dict(r) for r in result.mappings()}

    def aggregates(self, day: str = DAY) -> dict[str, dict]:
        """The warehouse aggregates of a partition, by user."""
        frame = store.read_aggregates(self.mirror, dt.date.fromisoformat(day), None)
        return {r["user_id"]: r for r in frame.to_dict("records")}

    def scalar(self, sql: str, params: Optional[dict] = None) -> Any:
        with self.app_db.connect() as conn:
            return conn.execute(sa.text(sql), params or {}).scalar()


def _engagement_db(app_db: AppDatabase, warehouse: Any) -> EngagementDb:
    with app_db.begin() as conn:
        store.ensure_goal_tables(conn)  # the application's tables (the results are migrated)
    db = EngagementDb(app_db, warehouse)
    db.mirror.ensure()
    return db


@pytest.fixture
def eng_db(app_db: AppDatabase, duckdb_warehouse) -> EngagementDb:
    """Application database with the (empty) goal tables, and a DuckDB warehouse."""
    return _engagement_db(app_db, duckdb_warehouse)


@pytest.fixture
def eng_db_on_warehouse(app_db: AppDatabase, warehouse) -> EngagementDb:
    """``eng_db`` on each warehouse engine: DuckDB and the BigQuery emulator."""
    return _engagement_db(app_db, warehouse)


@pytest.fixture
def world(eng_db: EngagementDb) -> EngagementDb:
    """``eng_db`` with the standard sub-categories, goals and service apps."""
    return eng_db.seed_world()


def emulator_resource(host: str, project: str, **overrides: Any) -> FirestoreResource:
    return FirestoreResource(emulator_host=host, project_id=project, **overrides)


@functools.lru_cache(maxsize=None)
def empty_export() -> str:
    """Path of an existing, empty local Firestore export (one per test process)."""
    handle, path = tempfile.mkstemp(prefix="empty-firestore-export-", suffix=".jsonl")
    os.close(handle)
    return path


def materialize(
    app_db: AppDatabase,
    keys: list[dg.AssetKey],
    partition: Optional[str] = DAY,
    run_config: Optional[dict] = None,
    firestore: Optional[FirestoreResource] = None,
    raise_on_error: bool = True,
    warehouse: Any = None,
) -> dg.ExecuteInProcessResult:
    resources: dict[str, Any] = {
        "app_db": app_db,
        "warehouse": warehouse or _WAREHOUSE_OF[id(app_db)],
        # the signals read Firestore up to T themselves: by default an existing, empty export
        # (the events of most tests are written straight into the mirror table)
        "firestore": firestore or LocalFirestore(local_export_path=empty_export()),
    }
    return dg.materialize(
        assets=ASSETS,
        selection=dg.AssetSelection.assets(*keys),
        partition_key=partition,
        run_config=run_config,
        resources=resources,
        raise_on_error=raise_on_error,
    )


def user_ids_config(user_ids: list[str], signals: bool = True, milestones: bool = True) -> dict:
    ops = {}
    if signals:
        ops[SIGNALS_OP] = {"config": {"user_ids": user_ids}}
    if milestones:
        ops[MILESTONES_OP] = {"config": {"user_ids": user_ids}}
    return {"ops": ops}


def materialization_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key == key:
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {key.to_user_string()}")


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }
