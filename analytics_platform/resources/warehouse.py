"""The warehouse: one interface, two engines.

SQL is written once in BigQuery Standard SQL (files under ``analytics_platform/sql``).
``BigQueryWarehouse`` runs it on BigQuery (or the BigQuery API emulator);
``DuckDBWarehouse`` transpiles it with sqlglot and runs it on a local DuckDB file whose
schemas are named after the BigQuery datasets.  Values are always bound parameters
(``@name``); dataset/table identifiers are validated before they are formatted in.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional, Sequence

import pandas as pd
import pyarrow as pa
from dagster import ConfigurableResource, get_dagster_logger
from pydantic import PrivateAttr

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

BQ_TYPES = ("STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "DATE", "JSON", "NUMERIC", "BYTES")
_DUCKDB_TYPES = {
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

LoadMode = Literal["append", "replace_partitions", "merge", "insert_missing"]


class WarehouseError(RuntimeError):
    """A warehouse statement failed; the message names the statement file when known."""


def validate_identifier(name: str) -> str:
    """Return ``name`` if it is a safe dataset/table/column identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"Invalid identifier {name!r}: use letters, digits and underscores only "
            "(starting with a letter or underscore)."
        )
    return name


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of BQ_TYPES
    required: bool = False

    def __post_init__(self) -> None:
        validate_identifier(self.name)
        if self.type not in BQ_TYPES:
            raise ValueError(f"Column {self.name}: unknown type {self.type!r}")


@dataclass(frozen=True)
class LoadResult:
    rows_staged: int
    rows_affected: int


@functools.lru_cache(maxsize=None)
def read_sql(name: str) -> str:
    """The text of ``analytics_platform/sql/<name>.sql``."""
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"No SQL file {path}")
    return path.read_text()


def render_sql(sql: str, **identifiers: str) -> str:
    """Format ``{placeholders}`` in ``sql`` with validated identifiers only."""
    return sql.format(**{k: validate_identifier(v) for k, v in identifiers.items()})


def _to_utc(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    return value


def _staging_name(table: str) -> str:
    return f"_stage_{table}_{uuid.uuid4().hex[:10]}"


def _load_statement(
    mode: LoadMode,
    target: str,
    staging: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    partition_column: Optional[str],
    preserve_on_update: Sequence[str],
    match_filter: Optional[str] = None,
) -> str:
    """BigQuery-dialect statement moving the staged rows into the target table."""
    cols = ", ".join(f"`{c}`" for c in columns)
    src_cols = ", ".join(f"S.`{c}`" for c in columns)
    if mode == "append":
        return f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging}"
    if mode == "replace_partitions":
        if not partition_column:
            raise ValueError("replace_partitions needs partition_column")
        return (
            f"MERGE {target} T USING {staging} S ON FALSE "
            f"WHEN NOT MATCHED BY SOURCE AND T.`{partition_column}` IN UNNEST(@_partitions) THEN DELETE "
            f"WHEN NOT MATCHED BY TARGET THEN INSERT ({cols}) VALUES ({src_cols})"
        )
    if not key_columns:
        raise ValueError(f"{mode} needs key_columns")
    on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in key_columns)
    if match_filter:
        # Extra condition on the target rows (e.g. a partition range): prunes the target
        # scan on BigQuery; target rows outside it never match.
        on = f"{on} AND ({match_filter})"
    insert = f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({src_cols})"
    if mode == "insert_missing":
        return f"MERGE {target} T USING {staging} S ON {on} {insert}"
    if mode == "merge":
        updatable = [c for c in columns if c not in key_columns and c not in preserve_on_update]
        update = ", ".join(f"`{c}` = S.`{c}`" for c in updatable)
        matched = f"WHEN MATCHED THEN UPDATE SET {update} " if updatable else ""
        return f"MERGE {target} T USING {staging} S ON {on} {matched}{insert}"
    raise ValueError(f"Unknown load mode {mode!r}")


class Warehouse(ConfigurableResource):
    """Interface every warehouse implements (see module docstring)."""

    # --- engine-specific -------------------------------------------------------------
    def query(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
        raise NotImplementedError

    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        return pa.Table.from_pandas(self.query(sql, params), preserve_index=False)

    def execute(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> int:
        """Run one statement; return the number of rows it affected (0 if unknown)."""
        raise NotImplementedError

    def ensure_dataset(self, dataset: str) -> None:
        raise NotImplementedError

    def table_columns(self, dataset: str, table: str) -> list[str]:
        """Column names of ``dataset.table`` in order; [] when it does not exist."""
        raise NotImplementedError

    def _stage(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        raise NotImplementedError

    def _drop(self, dataset: str, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS `{validate_identifier(dataset)}.{validate_identifier(table)}`")

    @property
    def engine(self) -> str:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------
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
        """Create ``dataset.table`` if absent and add any schema column it lacks."""
        validate_identifier(dataset)
        validate_identifier(table)
        self.ensure_dataset(dataset)
        existing = self.table_columns(dataset, table)
        if not existing:
            self.execute(self._create_table_sql(dataset, table, schema, partition_by, cluster_by))
            return
        for col in schema:
            if col.name not in existing:
                self.execute(f"ALTER TABLE `{dataset}.{table}` ADD COLUMN `{col.name}` {col.type}")

    def _create_table_sql(self, dataset, table, schema, partition_by, cluster_by) -> str:
        cols = ", ".join(
            f"`{c.name}` {c.type}{' NOT NULL' if c.required else ''}" for c in schema
        )
        sql = f"CREATE TABLE IF NOT EXISTS `{dataset}.{table}` ({cols})"
        if partition_by:
            sql += f" PARTITION BY {partition_by}"
        if cluster_by:
            sql += " CLUSTER BY " + ", ".join(validate_identifier(c) for c in cluster_by)
        return sql

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
          ``partition_values`` and inserts the new ones, in one statement;
        * ``merge`` updates rows matching ``key_columns`` (except ``preserve_on_update``
          columns) and inserts the rest;
        * ``insert_missing`` inserts only rows whose key is absent.

        ``match_filter`` (merge / insert_missing only) is a BigQuery-dialect condition on the
        target alias ``T`` added to the key match, with values bound from ``match_params``
        (e.g. ``"T.event_date BETWEEN @lo AND @hi"``): it limits (and on BigQuery prunes)
        the target rows a key can match.
        """
        self.ensure_table(dataset, table, schema)
        arrow = _to_arrow(data, schema)
        staging = _staging_name(table)
        self._stage(arrow, dataset, staging, schema)
        try:
            stmt = _load_statement(
                mode,
                f"`{dataset}.{table}`",
                f"`{dataset}.{staging}`",
                [c.name for c in schema],
                key_columns,
                partition_column,
                preserve_on_update,
                match_filter,
            )
            params = {"_partitions": list(partition_values)} if mode == "replace_partitions" else {}
            if match_filter and match_params:
                params.update(match_params)
            affected = self.execute(stmt, params or None)
        finally:
            self._drop(dataset, staging)
        return LoadResult(rows_staged=arrow.num_rows, rows_affected=affected)


_ARROW_TYPES = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
    "JSON": pa.string(),
    "NUMERIC": pa.decimal128(38, 9),
    "BYTES": pa.binary(),
}


def _to_arrow(data: pd.DataFrame | pa.Table, schema: Sequence[Column]) -> pa.Table:
    """Arrow table with exactly ``schema``'s columns (missing ones NULL), in order."""
    if isinstance(data, pd.DataFrame):
        data = data.reset_index(drop=True)
        arrays = []
        for col in schema:
            if col.name in data.columns:
                series = data[col.name]
                if col.type == "TIMESTAMP":
                    series = pd.to_datetime(series, utc=True)
                elif col.type == "DATE":
                    series = pd.to_datetime(series).dt.date
                arrays.append(pa.array(series, type=_ARROW_TYPES[col.type], from_pandas=True))
            else:
                arrays.append(pa.nulls(len(data), type=_ARROW_TYPES[col.type]))
        return pa.Table.from_arrays(arrays, names=[c.name for c in schema])
    arrays = []
    for col in schema:
        if col.name in data.column_names:
            arrays.append(data.column(col.name).cast(_ARROW_TYPES[col.type]))
        else:
            arrays.append(pa.nulls(data.num_rows, type=_ARROW_TYPES[col.type]))
    return pa.Table.from_arrays(arrays, names=[c.name for c in schema])


# ---------------------------------------------------------------------------------------
# DuckDB
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2048)
def transpile_to_duckdb(sql: str) -> str:
    """BigQuery-dialect SQL -> DuckDB SQL (cached: the same file is run many times)."""
    import sqlglot

    statements = sqlglot.transpile(sql, read="bigquery", write="duckdb")
    return ";\n".join(statements)


class DuckDBWarehouse(Warehouse):
    """Local warehouse: a DuckDB file; BigQuery SQL transpiled by sqlglot."""

    path: str
    lock_timeout_seconds: float = 120.0

    _local: Any = PrivateAttr(default=None)

    @property
    def engine(self) -> str:
        return "duckdb"

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection with TimeZone=UTC; waits while another process holds the file."""
        import duckdb

        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.IOException as exc:  # another process holds the write lock
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            con.execute("SET TimeZone='UTC'")
            yield con
        finally:
            con.close()

    def _params(self, params: Optional[Mapping[str, Any]]) -> Optional[dict]:
        if not params:
            return None
        return {k: _to_utc(v) if not isinstance(v, (list, tuple)) else [_to_utc(x) for x in v] for k, v in params.items()}

    def _run(self, con: Any, sql: str, params: Optional[Mapping[str, Any]]):
        duck_sql = transpile_to_duckdb(sql)
        bound = self._params(params)
        if bound:
            # DuckDB refuses parameters the statement does not use.
            bound = {k: v for k, v in bound.items() if f"${k}" in duck_sql}
        try:
            return con.execute(duck_sql, bound or None)
        except Exception as exc:
            raise WarehouseError(f"DuckDB statement failed: {exc}\n--- SQL ---\n{duck_sql}") from exc

    def query(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
        with self.connect() as con:
            return self._run(con, sql, params).df()

    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        with self.connect() as con:
            return self._run(con, sql, params).arrow()

    def execute(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> int:
        with self.connect() as con:
            cur = self._run(con, sql, params)
            try:
                row = cur.fetchone()
            except Exception:  # noqa: BLE001 - DDL has no result
                return 0
            if row and len(row) == 1 and isinstance(row[0], int):
                return int(row[0])
            return 0

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

    def _create_table_sql(self, dataset, table, schema, partition_by, cluster_by) -> str:
        # DuckDB has no partitioning/clustering clauses: plain CREATE TABLE.
        return super()._create_table_sql(dataset, table, schema, None, ())

    def _stage(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        with self.connect() as con:
            con.register("_incoming", data)
            casts = ", ".join(
                f'CAST("{c.name}" AS {_DUCKDB_TYPES[c.type]}) AS "{c.name}"' for c in schema
            )
            con.execute(f'CREATE TABLE "{dataset}"."{name}" AS SELECT {casts} FROM _incoming')
            con.unregister("_incoming")

    def load(self, data, dataset, table, schema, mode="append", **kwargs) -> LoadResult:  # type: ignore[override]
        """As :meth:`Warehouse.load`, staged and moved inside one DuckDB transaction."""
        self.ensure_table(dataset, table, schema)
        arrow = _to_arrow(data, schema)
        staging = _staging_name(table)
        stmt = _load_statement(
            mode,
            f"`{dataset}.{table}`",
            f"`{dataset}.{staging}`",
            [c.name for c in schema],
            kwargs.get("key_columns", ()),
            kwargs.get("partition_column"),
            kwargs.get("preserve_on_update", ()),
            kwargs.get("match_filter"),
        )
        params = (
            {"_partitions": [_to_utc(v) for v in kwargs.get("partition_values", ())]}
            if mode == "replace_partitions"
            else {}
        )
        if kwargs.get("match_filter") and kwargs.get("match_params"):
            params.update(self._params(kwargs["match_params"]) or {})
        params = params or None
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.register("_incoming", arrow)
                casts = ", ".join(
                    f'CAST("{c.name}" AS {_DUCKDB_TYPES[c.type]}) AS "{c.name}"' for c in schema
                )
                con.execute(f'CREATE TEMP TABLE "{staging}" AS SELECT {casts} FROM _incoming')
                con.unregister("_incoming")
                duck_stmt = transpile_to_duckdb(stmt).replace(f'"{dataset}"."{staging}"', f'temp.main."{staging}"')
                row = con.execute(duck_stmt, params).fetchone()
                con.execute(f'DROP TABLE temp.main."{staging}"')
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"DuckDB load into {dataset}.{table} failed: {exc}") from exc
        affected = int(row[0]) if row and isinstance(row[0], int) else 0
        return LoadResult(rows_staged=arrow.num_rows, rows_affected=affected)


# ---------------------------------------------------------------------------------------
# BigQuery
# ---------------------------------------------------------------------------------------
def _bq_param(name: str, value: Any):
    from google.cloud import bigquery

    def scalar_type(v: Any) -> str:
        if isinstance(v, bool):
            return "BOOL"
        if isinstance(v, int):
            return "INT64"
        if isinstance(v, float):
            return "FLOAT64"
        if isinstance(v, Decimal):
            return "NUMERIC"
        if isinstance(v, (dt.datetime, pd.Timestamp)):
            return "TIMESTAMP"
        if isinstance(v, dt.date):
            return "DATE"
        return "STRING"

    if isinstance(value, (list, tuple)):
        items = [_to_utc(v) for v in value]
        kind = scalar_type(items[0]) if items else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, items)
    value = _to_utc(value)
    return bigquery.ScalarQueryParameter(name, scalar_type(value) if value is not None else "STRING", value)


class BigQueryWarehouse(Warehouse):
    """Production warehouse on BigQuery (or the BigQuery API emulator when
    ``emulator_host`` is set: anonymous credentials, ``api_endpoint`` override)."""

    project: str
    location: str = "US"
    emulator_host: Optional[str] = None
    job_labels: dict[str, str] = {"app": "analytics_platform"}

    _client: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def engine(self) -> str:
        return "bigquery"

    @property
    def client(self):
        from google.cloud import bigquery

        with self._lock:
            if self._client is None:
                if self.emulator_host:
                    from google.api_core.client_options import ClientOptions
                    from google.auth.credentials import AnonymousCredentials

                    endpoint = self.emulator_host
                    if not endpoint.startswith("http"):
                        endpoint = f"http://{endpoint}"
                    self._client = bigquery.Client(
                        project=self.project,
                        location=self.location,
                        credentials=AnonymousCredentials(),
                        client_options=ClientOptions(api_endpoint=endpoint),
                    )
                else:
                    self._client = bigquery.Client(project=self.project, location=self.location)
            return self._client

    def _job_config(self, params: Optional[Mapping[str, Any]]):
        from google.cloud import bigquery

        cfg = bigquery.QueryJobConfig(labels=dict(self.job_labels))
        if params:
            cfg.query_parameters = [_bq_param(k, v) for k, v in params.items()]
        return cfg

    def _job(self, sql: str, params: Optional[Mapping[str, Any]]):
        try:
            job = self.client.query(sql, job_config=self._job_config(params), location=self.location)
            job.result()
            return job
        except Exception as exc:
            raise WarehouseError(f"BigQuery statement failed: {exc}\n--- SQL ---\n{sql}") from exc

    def query(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
        job = self._job(sql, params)
        return job.result().to_dataframe(create_bqstorage_client=False)

    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        return self._job(sql, params).result().to_arrow(create_bqstorage_client=False)

    def execute(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> int:
        job = self._job(sql, params)
        return int(job.num_dml_affected_rows or 0)

    def ensure_dataset(self, dataset: str) -> None:
        from google.cloud import bigquery

        ds = bigquery.Dataset(f"{self.project}.{validate_identifier(dataset)}")
        ds.location = self.location
        self.client.create_dataset(ds, exists_ok=True)

    def table_columns(self, dataset: str, table: str) -> list[str]:
        from google.api_core.exceptions import NotFound

        try:
            t = self.client.get_table(f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}")
        except NotFound:
            return []
        return [f.name for f in t.schema]

    def _stage(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        from google.cloud import bigquery

        bq_schema = [
            bigquery.SchemaField(c.name, "STRING" if c.type == "JSON" else c.type.replace("INT64", "INTEGER").replace("FLOAT64", "FLOAT").replace("BOOL", "BOOLEAN"))
            for c in schema
        ]
        cfg = bigquery.LoadJobConfig(
            schema=bq_schema, write_disposition="WRITE_TRUNCATE", labels=dict(self.job_labels)
        )
        frame = data.to_pandas(types_mapper=None)
        job = self.client.load_table_from_dataframe(
            frame, f"{self.project}.{dataset}.{name}", job_config=cfg, location=self.location
        )
        job.result()
        json_cols = [c.name for c in schema if c.type == "JSON"]
        if json_cols:
            # JSON travels as STRING through the load; convert in place.
            select = ", ".join(
                f"PARSE_JSON(`{c.name}`, wide_number_mode=>'round') AS `{c.name}`" if c.type == "JSON" else f"`{c.name}`"
                for c in schema
            )
            self.execute(
                f"CREATE OR REPLACE TABLE `{dataset}.{name}` AS SELECT {select} FROM `{dataset}.{name}`"
            )
