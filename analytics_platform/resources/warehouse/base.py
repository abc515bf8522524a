"""The ``Warehouse`` interface every engine implements, and what is shared by them:
SQL files, table creation, loads (validated into a :class:`LoadPlan` first)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import pandas as pd
import pyarrow as pa
from dagster import ConfigurableResource

from analytics_platform.common import read_sql, render_sql
from analytics_platform.resources.warehouse.arrow_types import arrow_to_pandas, to_arrow
from analytics_platform.resources.warehouse.ddl import validate_table_layout
from analytics_platform.resources.warehouse.load_plans import (
    LoadMode,
    LoadPlan,
    delete_partitions_statement,
    plan_load,
    prepare_batch,
)
from analytics_platform.resources.warehouse.schema import Column, LoadResult


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

    def column_types(self, dataset: str, table: str) -> dict[str, str]:
        """``{column: BigQuery type}`` of ``dataset.table`` (``STRING``, ``JSON``, ``INT64`` ...;
        other engines' types named as BigQuery names them); {} when it does not exist."""
        raise NotImplementedError

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
