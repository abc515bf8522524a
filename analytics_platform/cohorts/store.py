"""Warehouse side of the temp users cohort: every statement is a file under
``sql/cohorts/`` run through the ``Warehouse`` resource (BigQuery in production, DuckDB
locally).  No Dagster here: the assets call these methods and stay thin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pandas as pd

from analytics_platform.cohorts import tables as T
from analytics_platform.cohorts import temp_users as logic
from analytics_platform.resources.warehouse import read_sql, render_sql
from analytics_platform.settings import Settings

PRUNING_MARK = "-- partition pruning"


@dataclass(frozen=True)
class CohortStats:
    row_count: int
    unsynced: int
    duplicate_rows: int
    empty_ids: int


@dataclass(frozen=True)
class Detection:
    candidates: pd.DataFrame  # one row per temp user found in the window
    inserted: int

    @property
    def detected(self) -> int:
        return len(self.candidates)

    @property
    def already_known(self) -> int:
        return int(self.candidates["already_known"].fillna(False).astype(bool).sum()) if self.detected else 0

    @property
    def previously_removed(self) -> int:
        return int(self.candidates["removed_before"].fillna(False).astype(bool).sum()) if self.detected else 0


def _int(value: Any) -> int:
    if value is None or (isinstance(value, float) and value != value):
        return 0
    try:
        if pd.isna(value):
            return 0
    except (TypeError, ValueError):
        pass
    return int(value)


class CohortStore:
    """The cohort's tables in one warehouse, named from the settings."""

    def __init__(self, warehouse: Any, settings: Settings) -> None:
        self.warehouse = warehouse
        self.events_dataset = settings.bigquery_dataset
        self.events_table = settings.bigquery_table
        self.dataset = settings.cohort_dataset
        self._events_columns: Optional[list[str]] = None

    # identifiers for render_sql
    @property
    def _ids(self) -> dict[str, str]:
        return {
            "events_dataset": self.events_dataset,
            "events_table": self.events_table,
            "cohort_dataset": self.dataset,
            "cohort_table": T.TEMP_USERS_TABLE,
            "removed_table": T.REMOVED_TABLE,
            "audit_table": T.AUDIT_TABLE,
        }

    def _only(self, *names: str) -> dict[str, str]:
        ids = self._ids
        return {n: ids[n] for n in names}

    @property
    def table_name(self) -> str:
        return f"{self.dataset}.{T.TEMP_USERS_TABLE}"

    # ------------------------------------------------------------------ set-up
    def ensure_tables(self) -> None:
        self.warehouse.ensure_table(self.dataset, T.TEMP_USERS_TABLE, T.TEMP_USERS_SCHEMA)
        self.warehouse.ensure_table(self.dataset, T.REMOVED_TABLE, T.REMOVED_SCHEMA)

    def ensure_audit_table(self) -> None:
        self.warehouse.ensure_table(self.dataset, T.AUDIT_TABLE, T.AUDIT_SCHEMA)

    def events_table_exists(self) -> bool:
        return bool(self._columns_of_events())

    def _columns_of_events(self) -> list[str]:
        if not self._events_columns:
            self._events_columns = self.warehouse.table_columns(self.events_dataset, self.events_table)
        return self._events_columns

    def _events_query(self, name: str, params: dict[str, Any], *identifiers: str) -> pd.DataFrame:
        """Run a query over the events table; its ``-- partition pruning`` lines (event_date
        predicates that only let BigQuery skip partitions) are dropped when the table has
        no ``event_date`` column."""
        sql = read_sql(name)
        if "event_date" not in self._columns_of_events():
            sql = "\n".join(
                line for line in sql.splitlines() if not line.rstrip().endswith(PRUNING_MARK)
            )
        return self.warehouse.query(render_sql(sql, **self._only(*identifiers)), params)

    # --------------------------------------------------------------- detection
    def detect(self, window: logic.DetectionWindow) -> pd.DataFrame:
        """The detection query: one row per temp user whose pair lies in ``window``."""
        return self._events_query(
            "cohorts/detect_temp_users",
            window.params(),
            "events_dataset", "events_table", "cohort_dataset", "cohort_table", "removed_table",
        )

    def detect_and_insert(self, window: logic.DetectionWindow, detected_at: dt.datetime) -> Detection:
        """Detect, then insert the temp users not yet in the table (insert-if-absent)."""
        candidates = self.detect(window)
        if candidates.empty:
            return Detection(candidates, 0)
        fresh = candidates[
            ~candidates["already_known"].fillna(False).astype(bool)
            & ~candidates["removed_before"].fillna(False).astype(bool)
        ]
        if fresh.empty:
            return Detection(candidates, 0)
        rows = fresh[["distinct_id", "device_id", "privacy_event_at", "restore_event_at"]].copy()
        rows["detected_at"] = detected_at
        rows["mixpanel_synced_at"] = pd.NaT
        result = self.warehouse.load(
            rows,
            self.dataset,
            T.TEMP_USERS_TABLE,
            T.TEMP_USERS_SCHEMA,
            mode="insert_missing",
            key_columns=["distinct_id"],
        )
        return Detection(candidates, int(result.rows_affected))

    # ------------------------------------------------------------------- stats
    def stats(self) -> CohortStats:
        df = self.warehouse.run_file("cohorts/cohort_stats", None, **self._only("cohort_dataset", "cohort_table"))
        row = df.iloc[0] if len(df) else {}
        return CohortStats(
            row_count=_int(row.get("row_count")),
            unsynced=_int(row.get("unsynced")),
            duplicate_rows=_int(row.get("duplicate_rows")),
            empty_ids=_int(row.get("empty_ids")),
        )

    # ----------------------------------------------------------------- marking
    def unsynced_ids(self) -> list[str]:
        df = self.warehouse.run_file(
            "cohorts/unsynced_temp_users", None, **self._only("cohort_dataset", "cohort_table")
        )
        return [str(v) for v in df["distinct_id"].tolist()]

    def mark_synced(self, distinct_ids: Sequence[str], synced_at: dt.datetime) -> int:
        """Set ``mixpanel_synced_at`` for ``distinct_ids`` (chunks of SYNC_FLUSH_SIZE ids)."""
        updated = 0
        for chunk in logic.chunked(list(distinct_ids), logic.SYNC_FLUSH_SIZE):
            updated += self.warehouse.execute_file(
                "cohorts/mark_synced",
                {"synced_at": synced_at, "ids": chunk},
                **self._only("cohort_dataset", "cohort_table"),
            )
        return updated

    # ---------------------------------------------------------- active users
    def active_yesterday(self, window: logic.ActivityWindow) -> pd.DataFrame:
        return self._events_query(
            "cohorts/active_yesterday",
            window.params(),
            "events_dataset", "events_table", "cohort_dataset", "cohort_table",
        )

    def remove(self, rows: pd.DataFrame, run_id: str, removed_at: dt.datetime) -> int:
        """Record ``rows`` (active_yesterday rows) as removed, then delete them from the cohort."""
        if rows.empty:
            return 0
        keep = rows[
            ["distinct_id", "device_id", "privacy_event_at", "restore_event_at", "detected_at", "last_active_at"]
        ].copy()
        keep["removed_at"] = removed_at
        keep["run_id"] = run_id
        self.warehouse.load(
            keep, self.dataset, T.REMOVED_TABLE, T.REMOVED_SCHEMA, mode="insert_missing", key_columns=["distinct_id"]
        )
        deleted = 0
        for chunk in logic.chunked([str(i) for i in rows["distinct_id"]], logic.SYNC_FLUSH_SIZE):
            deleted += self.warehouse.execute_file(
                "cohorts/delete_temp_users", {"ids": chunk}, **self._only("cohort_dataset", "cohort_table")
            )
        return deleted

    # -------------------------------------------------------------- audit log
    def audit(
        self,
        run_id: str,
        step: str,
        status: str,
        details: Optional[dict[str, Any]] = None,
        logged_at: Optional[dt.datetime] = None,
    ) -> None:
        self.warehouse.execute_file(
            "cohorts/insert_audit_log",
            logic.audit_params(run_id, step, status, details, logged_at),
            **self._only("cohort_dataset", "audit_table"),
        )

    def summary_already_sent(self, day: dt.date) -> bool:
        df = self.warehouse.run_file(
            "cohorts/summary_sent",
            {"process_name": logic.PROCESS_NAME, "step": logic.STEP_SUMMARY, "day": day.isoformat()},
            **self._only("cohort_dataset", "audit_table"),
        )
        return bool(len(df)) and _int(df.iloc[0]["sent"]) > 0
