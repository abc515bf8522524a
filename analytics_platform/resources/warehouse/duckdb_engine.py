"""Local warehouse: a DuckDB file whose schemas are named after the BigQuery datasets;
the BigQuery-dialect SQL is transpiled by sqlglot (:mod:`.transpile`)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import pyarrow as pa
from pydantic import PrivateAttr

from analytics_platform.common import read_sql, render_sql, strip_sql_comments, validate_identifier
from analytics_platform.resources.warehouse.arrow_types import normalise_arrow, to_arrow
from analytics_platform.resources.warehouse.base import Warehouse
from analytics_platform.resources.warehouse.ddl import TableLayout
from analytics_platform.resources.warehouse.load_plans import (
    LoadPlan,
    delete_partitions_statement,
    insert_staged_statement,
    load_statement,
    staging_name,
)
from analytics_platform.resources.warehouse.schema import Column, WarehouseError, resolve_param
from analytics_platform.resources.warehouse.transpile import transpile_to_duckdb, used_parameters
from analytics_platform.resources.warehouse.write_lock import is_query, take_lock_statement

DUCKDB_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATE": "DATE",
    "JSON": "JSON",
    "NUMERIC": "DECIMAL(38, 9)",
    "BYTES": "BLOB",
}
# Storage hint for STRING and JSON columns: zstd.  DuckDB's default string compression
# analysis costs about twice the CPU of zstd on JSON payloads such as Mixpanel's
# properties (~90% of the events table's bytes) and compresses them less.
_TEXT_COMPRESSION = "zstd"
# The name an Arrow batch is registered under on the connection (insert_from_batch).
_BATCH = "_warehouse_batch"
# DuckDB (2.0) fails now and then to register an Arrow table on a connection opened while
# another thread opened the same database ("Table Function with name python_arrow_scan
# does not exist"): opening and registering take turns in this process (the statements
# themselves still run concurrently).
_REGISTER_LOCK = threading.Lock()
# Threads of a batch insert (see insert_from_batch).
_BATCH_INSERT_THREADS = 1


class DuckDBWarehouse(Warehouse):
    """Local warehouse: a DuckDB file; BigQuery SQL transpiled by sqlglot."""

    path: str
    lock_timeout_seconds: float = 120.0

    # (dataset, lock) whose row write_batch made sure of (the row is never deleted)
    _locks_ready: Any = PrivateAttr(default_factory=set)
    # session(): [open connection, depth] while a session is open
    _session: Any = PrivateAttr(default=None)
    _session_lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def engine(self) -> str:
        return "duckdb"

    def _open(self) -> Any:
        """``duckdb.connect(path)``; waits while another process holds the file."""
        import duckdb

        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                with _REGISTER_LOCK:  # see _REGISTER_LOCK
                    return duckdb.connect(self.path)
            except duckdb.IOException as exc:  # another process holds the write lock
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep the database open for the block: each statement's connection then comes
        from DuckDB's open instance (~0.5 ms) instead of opening the file (~10-20 ms) and
        checkpointing it at every close.  Other processes wait for the file meanwhile, as
        they do during a write: keep sessions to short blocks."""
        if self.path == ":memory:":
            yield
            return
        with self._session_lock:
            if self._session is None:
                self._session = [self._open(), 0]
            self._session[1] += 1
        try:
            yield
        finally:
            with self._session_lock:
                self._session[1] -= 1
                if self._session[1] == 0:
                    anchor, self._session = self._session[0], None
                    anchor.close()

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection with TimeZone=UTC; waits while another process holds the file."""
        con = self._open()
        try:
            con.execute("SET TimeZone='UTC'")
            yield con
        finally:
            con.close()

    def _prepare(self, sql: str, params: Optional[Mapping[str, Any]]) -> tuple[str, Optional[dict]]:
        """DuckDB SQL and bound values; list and typed parameters are CAST as BigQuery types them."""
        bound = {k: resolve_param(v) for k, v in (params or {}).items()}
        casts = tuple(sorted(
            (k, f"ARRAY<{b.type}>" if b.is_array else b.type)
            for k, b in bound.items()
            if b.is_array or b.explicit
        ))
        duck_sql = transpile_to_duckdb(sql, casts)
        used = used_parameters(duck_sql)
        # DuckDB refuses parameters the statement does not use.
        values = {k: b.value for k, b in bound.items() if k in used}
        return duck_sql, values or None

    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        duck_sql, values = self._prepare(sql, params)
        with self.connect() as con:
            try:
                relation = con.sql(duck_sql, params=values)
                table = relation.to_arrow_table() if relation is not None else pa.table({})
            except Exception as exc:
                raise WarehouseError(f"DuckDB statement failed: {exc}\n--- SQL ---\n{duck_sql}") from exc
        return normalise_arrow(table)

    def execute(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> int:
        duck_sql, values = self._prepare(sql, params)
        with self.connect() as con:
            try:
                return _duckdb_affected(con.execute(duck_sql, values))
            except Exception as exc:
                raise WarehouseError(f"DuckDB statement failed: {exc}\n--- SQL ---\n{duck_sql}") from exc

    def ensure_dataset(self, dataset: str) -> None:
        with self.connect() as con:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{validate_identifier(dataset)}"')

    def table_columns(self, dataset: str, table: str) -> list[str]:
        with self.connect() as con:
            rows = con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [dataset, table],
            ).fetchall()
        return [r[0] for r in rows]

    def table_layout(self, dataset: str, table: str) -> Optional[TableLayout]:
        """Columns with their BigQuery types (DuckDB has no partitioning or clustering)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [dataset, table],
            ).fetchall()
        if not rows:
            return None
        back = {v.split("(")[0]: k for k, v in DUCKDB_TYPES.items()}
        back.update({"TIMESTAMP WITH TIME ZONE": "TIMESTAMP", "DECIMAL": "NUMERIC", "INTEGER": "INT64"})
        return TableLayout(
            tuple((name, back.get(str(typ).split("(")[0].upper(), str(typ).upper())) for name, typ in rows),
            physical=False,
        )

    def drop_table(self, dataset: str, table: str) -> None:
        with self.connect() as con:
            con.execute(f'DROP TABLE IF EXISTS "{validate_identifier(dataset)}"."{validate_identifier(table)}"')

    def _create_table(self, dataset, table, schema, partition_by, cluster_by) -> None:
        """DuckDB has no partitioning or clustering; text columns are stored with zstd
        (a physical hint only: same columns and types as on BigQuery)."""
        cols = ", ".join(_column_ddl(c) + (" NOT NULL" if c.required else "") for c in schema)
        with self.connect() as con:
            con.execute(f'CREATE TABLE IF NOT EXISTS "{dataset}"."{table}" ({cols})')

    def _add_column(self, dataset: str, table: str, column: Column) -> None:
        # NULLABLE like BigQuery's ADD COLUMN: the existing rows get NULL.
        with self.connect() as con:
            con.execute(f'ALTER TABLE "{dataset}"."{table}" ADD COLUMN {_column_ddl(column)}')

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
        """The statement reads the Arrow batch registered on the connection (no copy),
        in one transaction."""
        validate_identifier(batch_dataset)
        arrow = to_arrow(batch, batch_schema, text_as_is=True)
        sql = render_sql(read_sql(sql_name), batch_dataset="main", batch=_BATCH, **identifiers)
        duck_sql, values = self._prepare(sql, params)
        with self.connect() as con:
            # One thread: DuckDB's parallel insert writes each thread's rows apart and
            # rewrites them at the checkpoint, about twice the CPU of a single-threaded
            # append of the same batch (and a larger file).  The setting belongs to the
            # database instance, so it is reset for whoever uses it next.
            con.execute(f"SET threads={_BATCH_INSERT_THREADS}")
            with _REGISTER_LOCK:
                con.register(_BATCH, arrow)
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    affected = _duckdb_affected(con.execute(duck_sql, values))
                    con.execute("COMMIT")
                except Exception as exc:
                    con.execute("ROLLBACK")
                    raise WarehouseError(
                        f"DuckDB statement {sql_name} failed: {exc}\n--- SQL ---\n{duck_sql}"
                    ) from exc
            finally:
                with _REGISTER_LOCK:
                    con.unregister(_BATCH)
                con.execute("RESET threads")
        return affected

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
        """The statements read the Arrow batch registered on the connection (no copy), in
        one transaction whose first statement updates the lock's row: a concurrent writer
        of the same lock in this process fails with DuckDB's "Conflict on update" and is
        retried; another process waits for the file (``connect``)."""
        validate_identifier(batch_dataset)
        schema = [Column(c.name, "STRING" if c.type == "JSON" else c.type, c.required) for c in batch_schema]
        arrow = to_arrow(batch, schema, text_as_is=True)
        if (batch_dataset, lock) not in self._locks_ready:
            self.ensure_write_lock(batch_dataset, lock)
            self._locks_ready.add((batch_dataset, lock))
        lock_params = self._lock_params(lock)
        guards = [None, *(None if g is None else g + 1 for g in self._guards(sql_names, run_if_positive))]
        steps = [(False, *self._prepare(take_lock_statement(batch_dataset), lock_params))]
        for name in sql_names:
            sql = strip_sql_comments(render_sql(read_sql(name), batch_dataset="main", batch=_BATCH, **identifiers))
            steps.append((is_query(sql), *self._prepare(sql, params)))

        def attempt() -> list[int]:
            with self.connect() as con:
                con.execute(f"SET threads={_BATCH_INSERT_THREADS}")  # see insert_from_batch
                try:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        with _REGISTER_LOCK:
                            con.register(_BATCH, arrow)
                        results = []
                        for (query, duck_sql, values), guard in zip(steps, guards):
                            if guard is not None and results[guard] <= 0:
                                results.append(0)
                                continue
                            cur = con.execute(duck_sql, values)
                            if query:
                                row = cur.fetchone()
                                results.append(int(row[0] or 0) if row else 0)
                            else:
                                results.append(_duckdb_affected(cur))
                        con.execute("COMMIT")
                    except Exception as exc:
                        con.execute("ROLLBACK")
                        raise WarehouseError(f"DuckDB batch write {list(sql_names)} failed: {exc}") from exc
                finally:
                    with _REGISTER_LOCK:
                        con.unregister(_BATCH)
                    con.execute("RESET threads")
            return results[1:]  # without the lock's UPDATE

        return self._retry_on_conflict(attempt)

    def _load_staged(self, arrow: pa.Table, plan: LoadPlan) -> int:
        """Staged in a TEMP table and moved inside one DuckDB transaction."""
        staging = staging_name(plan.table)
        if plan.mode == "replace_partitions":
            # DuckDB plans MERGE ... ON FALSE as a nested loop (quadratic in the table
            # size); inside this transaction DELETE + INSERT is just as atomic.
            stmts = [delete_partitions_statement(plan), insert_staged_statement(plan, staging)]
        else:
            stmts = [load_statement(plan, staging)]
        prepared = []
        for stmt in stmts:
            duck_stmt, values = self._prepare(stmt, plan.statement_params())
            prepared.append((duck_stmt.replace(f'"{plan.dataset}"."{staging}"', f'temp.main."{staging}"'), values))
        casts = ", ".join(
            f'CAST("{c.name}" AS {DUCKDB_TYPES[c.type]}) AS "{c.name}"' for c in plan.schema
        )
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.register("_incoming", arrow)
                con.execute(f'CREATE TEMP TABLE "{staging}" AS SELECT {casts} FROM _incoming')
                con.unregister("_incoming")
                affected = sum(_duckdb_affected(con.execute(sql, values)) for sql, values in prepared)
                con.execute(f'DROP TABLE temp.main."{staging}"')
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"DuckDB load into {plan.dataset}.{plan.table} failed: {exc}") from exc
        return affected


# DuckDB type names -> BigQuery's (column_types)
def _column_ddl(column: Column) -> str:
    """``"name" TYPE`` with the storage hint of a text column."""
    hint = f" USING COMPRESSION {_TEXT_COMPRESSION}" if column.type in ("STRING", "JSON") else ""
    return f'"{column.name}" {DUCKDB_TYPES[column.type]}{hint}'


def _duckdb_affected(cur: Any) -> int:
    """Rows affected by a DuckDB DML statement (its one-row ``Count`` result), else 0."""
    description = getattr(cur, "description", None)
    if not description or len(description) != 1 or str(description[0][0]).lower() != "count":
        return 0
    try:
        row = cur.fetchone()
    except Exception:  # noqa: BLE001 - DDL has no result
        return 0
    if row and isinstance(row[0], int):
        return int(row[0])
    return 0
