"""The ``Warehouse`` interface every engine implements, and what is shared by them:
SQL files, table creation, loads (validated into a :class:`LoadPlan` first)."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar

import pandas as pd
import pyarrow as pa
from dagster import ConfigurableResource

from analytics_platform.common import read_sql, render_sql
from analytics_platform.resources.warehouse.arrow_types import arrow_to_pandas, to_arrow
from analytics_platform.resources.warehouse.ddl import TableLayout, rename_table_statement, validate_table_layout
from analytics_platform.resources.warehouse.load_plans import (
    LoadMode,
    LoadPlan,
    delete_partitions_statement,
    plan_load,
    prepare_batch,
)
from analytics_platform.resources.warehouse.schema import Column, LoadResult, WarehouseError
from analytics_platform.resources.warehouse.write_lock import (
    RETRY_DELAYS,
    WRITE_LOCKS_SCHEMA,
    WRITE_LOCKS_TABLE,
    ensure_lock_row_statement,
    is_write_conflict,
    retry_delay,
)

T = TypeVar("T")


class Warehouse(ConfigurableResource):
    """Interface every warehouse implements (see the package docstring)."""

    # --- engine-specific -------------------------------------------------------------
    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        """Run a SELECT; rows as an Arrow table with BigQuery's Arrow types."""
        raise NotImplementedError

    def execute(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> int:
        """Run one statement; return the number of rows it affected (0 if unknown)."""
        raise NotImplementedError

    def ensure_dataset(self, dataset: str) -> None:
        raise NotImplementedError

    def table_columns(self, dataset: str, table: str) -> list[str]:
        """Column names of ``dataset.table`` in order; [] when it does not exist."""
        raise NotImplementedError

    def table_layout(self, dataset: str, table: str) -> Optional[TableLayout]:
        """Columns (with types), partitioning and clustering of ``dataset.table`` (BigQuery:
        the table's metadata); ``None`` when it does not exist."""
        raise NotImplementedError

    def drop_table(self, dataset: str, table: str) -> None:
        """Drop ``dataset.table`` if it exists."""
        raise NotImplementedError

    def rename_table(self, dataset: str, table: str, new_name: str) -> None:
        """Rename ``dataset.table`` to ``dataset.new_name`` (data, partitioning and
        clustering kept)."""
        self.execute(rename_table_statement(dataset, table, new_name))

    def column_types(self, dataset: str, table: str) -> dict[str, str]:
        """``{column: BigQuery type}`` of ``dataset.table`` (``STRING``, ``JSON``, ``INT64`` ...;
        other engines' types named as BigQuery names them); {} when it does not exist."""
        layout = self.table_layout(dataset, table)
        return dict(layout.columns) if layout is not None else {}

    def insert_from_batch(
        self,
        sql_name: str,
        batch: pa.Table,
        batch_schema: Sequence[Column],
        params: Optional[Mapping[str, Any]] = None,
        *,
        batch_dataset: str,
        **identifiers: str,
    ) -> int:
        """Run the statement in ``sql/<sql_name>.sql`` with ``batch`` readable as
        ``{batch_dataset}.{batch}``; return the rows it affected.

        The batch is cast to ``batch_schema`` (its columns, in order).  ``batch_dataset``
        is where an engine that needs a table for it may stage it (BigQuery: a staging
        table there, expiring by itself, dropped afterwards; DuckDB: the Arrow table is
        read in place).  ``identifiers`` fill the file's other ``{placeholders}``.

        Not serialized: two concurrent "insert when absent" statements may both insert the
        same row (see :mod:`.write_lock`); writers that may run at the same time use
        :meth:`write_batch`.
        """
        raise NotImplementedError

    def write_batch(
        self,
        sql_names: Sequence[str],
        batch: pa.Table,
        batch_schema: Sequence[Column],
        params: Optional[Mapping[str, Any]] = None,
        *,
        batch_dataset: str,
        lock: str,
        run_if_positive: Optional[Mapping[str, str]] = None,
        **identifiers: str,
    ) -> list[int]:
        """Run the statements ``sql/<name>.sql`` (in order) over ``batch`` (readable as
        ``{batch_dataset}.{batch}``) in ONE transaction that first takes the write lock
        ``lock``; return each statement's result (DML: rows affected; a scalar SELECT: its
        value).  ``run_if_positive``: ``{statement: earlier statement}``: the statement runs
        only when the earlier one's result is positive (else its result is 0).

        Writers of the same ``lock`` never interleave, even from different runs or
        processes: the transaction's first statement updates the lock's row of
        ``{batch_dataset}.warehouse_write_locks``, so a concurrent writer is cancelled and
        retried from a fresh snapshot (see :mod:`.write_lock`).  JSON columns of
        ``batch_schema`` arrive as their text (STRING): parse them in the statement
        (``SAFE.PARSE_JSON``).  BigQuery stages the batch in a table of ``batch_dataset``
        created with an expiry (it disappears by itself if the process dies) and dropped
        afterwards.
        """
        raise NotImplementedError

    @property
    def engine(self) -> str:
        """``"duckdb"`` or ``"bigquery"``: for labels and messages, never for branching."""
        raise NotImplementedError

    def _create_table(self, dataset, table, schema, partition_by, cluster_by) -> None:
        raise NotImplementedError

    def _add_column(self, dataset: str, table: str, column: Column) -> None:
        raise NotImplementedError

    def _load_staged(self, arrow: pa.Table, plan: LoadPlan) -> int:
        """Move the (non-empty) batch into the plan's table atomically; rows affected."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[None]:
        """A block of many short statements (set-up, bookkeeping): an engine that opens its
        database per statement keeps it open for the block.  Re-entrant; nothing to do
        for a client-server warehouse (BigQuery)."""
        yield

    def ensure_write_lock(self, dataset: str, lock: str) -> None:
        """Create ``{dataset}.warehouse_write_locks`` and the row of ``lock`` if absent
        (:meth:`write_batch` does it too; call this once before starting writers)."""
        self.ensure_table(dataset, WRITE_LOCKS_TABLE, WRITE_LOCKS_SCHEMA)
        self.execute(ensure_lock_row_statement(dataset), {"_lock_name": lock})

    @staticmethod
    def _retry_on_conflict(attempt_write: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        """Run ``attempt_write`` again while a concurrent writer cancels it (a lock conflict)."""
        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                return attempt_write()
            except WarehouseError as exc:
                if not is_write_conflict(exc) or attempt == len(RETRY_DELAYS):
                    raise
                sleep(retry_delay(attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _guards(sql_names: Sequence[str], run_if_positive: Optional[Mapping[str, str]]) -> list[Optional[int]]:
        """For each statement, the index of the earlier statement that must be positive."""
        guards: list[Optional[int]] = []
        for i, name in enumerate(sql_names):
            guard = (run_if_positive or {}).get(name)
            if guard is not None and guard not in sql_names[:i]:
                raise ValueError(f"run_if_positive: {guard!r} is not a statement before {name!r}")
            guards.append(None if guard is None else list(sql_names).index(guard))
        return guards

    @staticmethod
    def _lock_params(lock: str) -> dict[str, str]:
        """``@_lock_name`` / ``@_lock_holder`` of a batch write (holder: for people looking
        at the lock table; never a secret)."""
        return {"_lock_name": lock, "_lock_holder": f"{uuid.uuid4().hex[:12]}"}

    def query(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
        """Run a SELECT; rows as a DataFrame with BigQuery's pandas types."""
        return arrow_to_pandas(self.query_arrow(sql, params))

    def table_exists(self, dataset: str, table: str) -> bool:
        return bool(self.table_columns(dataset, table))

    def ensure_table(
        self,
        dataset: str,
        table: str,
        schema: Sequence[Column],
        partition_by: Optional[str] = None,
        cluster_by: Sequence[str] = (),
    ) -> None:
        """Create ``dataset.table`` if absent and add any schema column it lacks.

        ``partition_by``: a DATE/TIMESTAMP column, ``DATE(col)`` or
        ``TIMESTAMP_TRUNC(col, DAY)``-style expression, and ``cluster_by``: BigQuery's
        physical layout; the DuckDB engine has its own (zstd text columns) instead.
        """
        validate_table_layout(dataset, table, partition_by, cluster_by)
        self.ensure_dataset(dataset)
        existing = self.table_columns(dataset, table)
        if not existing:
            self._create_table(dataset, table, schema, partition_by, cluster_by)
            return
        for col in schema:
            if col.name not in existing:
                self._add_column(dataset, table, col)

    def run_file(
        self, name: str, params: Optional[Mapping[str, Any]] = None, **identifiers: str
    ) -> pd.DataFrame:
        """Run the SELECT in ``sql/<name>.sql`` and return its rows."""
        return self.query(render_sql(read_sql(name), **identifiers), params)

    def execute_file(
        self, name: str, params: Optional[Mapping[str, Any]] = None, **identifiers: str
    ) -> int:
        """Run the statement in ``sql/<name>.sql``; return the rows it affected."""
        return self.execute(render_sql(read_sql(name), **identifiers), params)

    def load(
        self,
        data: pd.DataFrame | pa.Table,
        dataset: str,
        table: str,
        schema: Sequence[Column],
        mode: LoadMode = "append",
        *,
        key_columns: Sequence[str] = (),
        partition_column: Optional[str] = None,
        partition_values: Sequence[Any] = (),
        preserve_on_update: Sequence[str] = (),
        match_filter: Optional[str] = None,
        match_params: Optional[Mapping[str, Any]] = None,
    ) -> LoadResult:
        """Load rows into ``dataset.table`` (created if missing), atomically per call.

        * ``append`` inserts every row;
        * ``replace_partitions`` deletes the rows whose ``partition_column`` is in
          ``partition_values`` and inserts the new ones, in one statement.  Without
          ``partition_values`` the partitions present in ``data`` are replaced; a row
          outside the named partitions is an error (it would duplicate on a re-run);
        * ``merge`` updates rows matching ``key_columns`` (except ``preserve_on_update``
          columns) and inserts the rest;
        * ``insert_missing`` inserts only rows whose key is absent.

        For ``merge``/``insert_missing`` the batch is de-duplicated on the key (the last
        row of a key wins) and a NULL key is an error (it could never match, so every
        re-run would insert it again).

        ``match_filter`` (merge / insert_missing only) is a BigQuery-dialect condition on the
        target alias ``T`` added to the key match, its values bound from ``match_params``
        (e.g. ``"T.event_date BETWEEN @lo AND @hi"``): it limits (and on BigQuery prunes)
        the target rows a key can match.
        """
        plan = plan_load(
            dataset, table, schema, mode,
            key_columns=key_columns, partition_column=partition_column,
            partition_values=partition_values, preserve_on_update=preserve_on_update,
            match_filter=match_filter, match_params=match_params,
        )
        self.ensure_table(dataset, table, schema)
        plan, arrow = prepare_batch(plan, to_arrow(data, schema))
        if arrow.num_rows == 0:
            affected = 0
            if plan.mode == "replace_partitions" and plan.partitions.value:
                affected = self.execute(delete_partitions_statement(plan), plan.statement_params())
            return LoadResult(rows_staged=0, rows_affected=affected)
        affected = self._load_staged(arrow, plan)
        return LoadResult(rows_staged=arrow.num_rows, rows_affected=affected)
