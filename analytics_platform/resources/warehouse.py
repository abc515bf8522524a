"""The warehouse: one interface, two engines.

SQL is written once in BigQuery Standard SQL (files under ``analytics_platform/sql``).
``BigQueryWarehouse`` runs it on BigQuery (or the BigQuery API emulator);
``DuckDBWarehouse`` transpiles it with sqlglot and runs it on a local DuckDB file whose
schemas are named after the BigQuery datasets.  Values are always bound parameters
(``@name``); dataset/table identifiers are validated before they are formatted in.

Both engines return the same pandas types from :meth:`Warehouse.query` (those of
``google-cloud-bigquery``): INT64 -> ``Int64``, BOOL -> ``boolean``, DATE -> ``dbdate``
(``datetime.date`` values), TIMESTAMP -> ``datetime64[us, UTC]``, NUMERIC -> ``Decimal``,
JSON -> ``str`` (the JSON text), FLOAT64 -> ``float64``, STRING -> ``object``.

Parameters: Python values are typed like BigQuery does (``int`` -> INT64, ``datetime``
-> TIMESTAMP in UTC, naive = UTC, ``date`` -> DATE, lists -> ARRAY of the first
element's type).  A NULL scalar or an empty list has no type of its own: wrap it in
:class:`Param` (``Param([], "INT64")``) when the SQL needs one; untyped ones are STRING.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
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
import pyarrow.compute as pc
from dagster import ConfigurableResource, get_dagster_logger
from pydantic import PrivateAttr

from analytics_platform.common import SQL_DIR, read_sql, render_sql, validate_identifier  # noqa: F401 (re-exported)

# PARTITION BY: a column, DATE(col), or {DATE,TIMESTAMP}_TRUNC(col, unit).
_PARTITION_EXPR = re.compile(
    r"^(?:(?P<col>[A-Za-z_][A-Za-z0-9_]*)"
    r"|DATE\(\s*(?P<dcol>[A-Za-z_][A-Za-z0-9_]*)\s*\)"
    r"|(?:DATE|TIMESTAMP|DATETIME)_TRUNC\(\s*(?P<tcol>[A-Za-z_][A-Za-z0-9_]*)\s*,\s*(?:HOUR|DAY|MONTH|YEAR)\s*\))$",
    re.IGNORECASE,
)

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
# Types of the load-job schema (legacy names); JSON travels as STRING and is parsed by
# the statement that moves the staged rows (see _load_statement).
_BQ_LOAD_TYPES = {
    "STRING": "STRING",
    "INT64": "INTEGER",
    "FLOAT64": "FLOAT",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP",
    "DATE": "DATE",
    "JSON": "STRING",
    "NUMERIC": "NUMERIC",
    "BYTES": "BYTES",
}

LoadMode = Literal["append", "replace_partitions", "merge", "insert_missing"]
LOAD_MODES = ("append", "replace_partitions", "merge", "insert_missing")
_UTC = dt.timezone.utc


class WarehouseError(RuntimeError):
    """A warehouse statement failed; the message names the statement file when known."""


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
    rows_staged: int  # rows moved into the table's statement (after de-duplication)
    rows_affected: int  # rows inserted + updated + deleted


@dataclass(frozen=True)
class Param:
    """A query parameter with an explicit BigQuery type (one of ``BQ_TYPES``).

    Needed where the value alone has no type: ``Param(None, "TIMESTAMP")``,
    ``Param([], "INT64")`` (for a list, ``type`` is the element type).
    """

    value: Any
    type: str

    def __post_init__(self) -> None:
        if self.type not in BQ_TYPES:
            raise ValueError(f"Param type must be one of {BQ_TYPES}, got {self.type!r}")


def _to_utc(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        if pd.isna(value):
            return None
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)
    return value


def _scalar_type(value: Any) -> str:
    """The BigQuery type of a Python value (STRING when it has none)."""
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, (bytes, bytearray)):
        return "BYTES"
    return "STRING"


@dataclass(frozen=True)
class _Bound:
    """A parameter resolved for binding: UTC-normalised value, BigQuery type, array?"""

    value: Any
    type: str
    is_array: bool
    explicit: bool


def _resolve_param(value: Any) -> _Bound:
    explicit = isinstance(value, Param)
    kind = value.type if explicit else None
    raw = value.value if explicit else value
    if isinstance(raw, (list, tuple)):
        items = [_to_utc(v) for v in raw]
        if kind is None:
            first = next((v for v in items if v is not None), None)
            kind = _scalar_type(first) if first is not None else "STRING"
        return _Bound(items, kind, True, explicit)
    raw = _to_utc(raw)
    if kind is None:
        kind = _scalar_type(raw) if raw is not None else "STRING"
    return _Bound(raw, kind, False, explicit)


def _coerce_partition_value(value: Any, kind: str) -> Any:
    """A partition value as the Python value of the partition column's type (UTC)."""
    if value is None:
        raise ValueError("partition_values must not contain NULL")
    if kind == "DATE":
        if isinstance(value, str):
            return dt.date.fromisoformat(value[:10])
        if isinstance(value, (dt.datetime, pd.Timestamp)):
            return _to_utc(value).date()
        if isinstance(value, dt.date):
            return value
    elif kind == "TIMESTAMP":
        if isinstance(value, str):
            return _to_utc(pd.Timestamp(value))
        if isinstance(value, (dt.datetime, pd.Timestamp)):
            return _to_utc(value)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)
    elif kind == "INT64":
        return int(value)
    elif kind == "STRING":
        return str(value)
    elif kind == "BOOL":
        return bool(value)
    else:
        raise ValueError(f"replace_partitions does not support a {kind} partition column")
    raise ValueError(f"Cannot use {value!r} as a {kind} partition value")


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
    parse_json: Sequence[str] = (),
    match_filter: Optional[str] = None,
) -> str:
    """BigQuery-dialect statement moving the staged rows into the target table.

    ``parse_json``: staged STRING columns to convert with PARSE_JSON on the way in.
    """
    def src(c: str, alias: str = "S.") -> str:
        ref = f"{alias}`{c}`"
        return f"PARSE_JSON({ref}, wide_number_mode=>'round')" if c in parse_json else ref

    cols = ", ".join(f"`{c}`" for c in columns)
    src_cols = ", ".join(src(c) for c in columns)
    if mode == "append":
        return f"INSERT INTO {target} ({cols}) SELECT {', '.join(src(c, '') for c in columns)} FROM {staging}"
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
        update = ", ".join(f"`{c}` = {src(c)}" for c in updatable)
        matched = f"WHEN MATCHED THEN UPDATE SET {update} " if updatable else ""
        return f"MERGE {target} T USING {staging} S ON {on} {matched}{insert}"
    raise ValueError(f"Unknown load mode {mode!r}")


@dataclass(frozen=True)
class _LoadPlan:
    mode: LoadMode
    dataset: str
    table: str
    schema: tuple[Column, ...]
    key_columns: tuple[str, ...]
    partition_column: Optional[str]
    preserve_on_update: tuple[str, ...]
    partitions: Optional[Param]
    match_filter: Optional[str] = None
    match_params: Optional[Mapping[str, Any]] = None

    def statement_params(self) -> Optional[dict]:
        """Parameters of the moving statement (partitions and/or match_params)."""
        params: dict = {}
        if self.mode == "replace_partitions":
            params["_partitions"] = self.partitions
        if self.match_filter and self.match_params:
            params.update(self.match_params)
        return params or None


class Warehouse(ConfigurableResource):
    """Interface every warehouse implements (see module docstring)."""

    # --- engine-specific -------------------------------------------------------------
    def query(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
        """Run a SELECT; rows as a DataFrame with BigQuery's pandas types."""
        return arrow_to_pandas(self.query_arrow(sql, params))

    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        raise NotImplementedError

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
        """Create ``dataset.table`` if absent and add any schema column it lacks.

        ``partition_by``: a DATE/TIMESTAMP column, ``DATE(col)`` or
        ``TIMESTAMP_TRUNC(col, DAY)``-style expression (BigQuery only; DuckDB ignores it).
        """
        validate_identifier(dataset)
        validate_identifier(table)
        if partition_by is not None and not _PARTITION_EXPR.match(partition_by.strip()):
            raise ValueError(f"Invalid partition_by {partition_by!r}")
        for c in cluster_by:
            validate_identifier(c)
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
            sql += f" PARTITION BY {partition_by.strip()}"
        if cluster_by:
            sql += " CLUSTER BY " + ", ".join(f"`{validate_identifier(c)}`" for c in cluster_by)
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
        plan = self._plan(dataset, table, schema, mode, key_columns, partition_column,
                          partition_values, preserve_on_update)
        if match_filter:
            if mode not in ("merge", "insert_missing"):
                raise ValueError("match_filter applies to merge and insert_missing only")
            plan = dataclasses.replace(plan, match_filter=match_filter, match_params=dict(match_params or {}))
        self.ensure_table(dataset, table, schema)
        arrow = _to_arrow(data, schema)
        if mode in ("merge", "insert_missing"):
            arrow = _dedupe_on_keys(arrow, key_columns)
        if mode == "replace_partitions":
            plan = _resolve_partitions(plan, arrow)
        if arrow.num_rows == 0:
            affected = 0
            if mode == "replace_partitions" and plan.partitions.value:
                affected = self.execute(
                    f"DELETE FROM `{dataset}.{table}` WHERE `{partition_column}` IN UNNEST(@_partitions)",
                    {"_partitions": plan.partitions},
                )
            return LoadResult(rows_staged=0, rows_affected=affected)
        affected = self._load_staged(arrow, plan)
        return LoadResult(rows_staged=arrow.num_rows, rows_affected=affected)

    def _plan(self, dataset, table, schema, mode, key_columns, partition_column,
              partition_values, preserve_on_update) -> _LoadPlan:
        """Validate a load's arguments before anything touches the warehouse."""
        validate_identifier(dataset)
        validate_identifier(table)
        if mode not in LOAD_MODES:
            raise ValueError(f"Unknown load mode {mode!r}: use one of {LOAD_MODES}")
        names = [c.name for c in schema]
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate column names in the schema of {dataset}.{table}")
        by_name = {c.name: c for c in schema}
        for name in [*key_columns, *preserve_on_update, *([partition_column] if partition_column else [])]:
            validate_identifier(name)
            if name not in by_name:
                raise ValueError(f"{name!r} is not a column of the schema of {dataset}.{table}")
        partitions = None
        if mode in ("merge", "insert_missing"):
            if not key_columns:
                raise ValueError(f"{mode} needs key_columns")
            if any(by_name[k].type == "JSON" for k in key_columns):
                raise ValueError("JSON columns cannot be merge keys")
        if mode == "replace_partitions":
            if not partition_column:
                raise ValueError("replace_partitions needs partition_column")
            kind = by_name[partition_column].type
            partitions = Param(sorted({_coerce_partition_value(v, kind) for v in partition_values}), kind)
        return _LoadPlan(mode, dataset, table, tuple(schema), tuple(key_columns), partition_column,
                         tuple(preserve_on_update), partitions)

    def _load_statement_for(self, plan: _LoadPlan, staging: str, parse_json: Sequence[str] = ()) -> str:
        return _load_statement(
            plan.mode,
            f"`{plan.dataset}.{plan.table}`",
            staging,
            [c.name for c in plan.schema],
            plan.key_columns,
            plan.partition_column,
            plan.preserve_on_update,
            parse_json,
            plan.match_filter,
        )

    def _load_staged(self, arrow: pa.Table, plan: _LoadPlan) -> int:
        """Stage ``arrow`` in a table of its own, move it with one statement, drop it."""
        staging = _staging_name(plan.table)
        self._stage(arrow, plan.dataset, staging, plan.schema)
        try:
            stmt = self._load_statement_for(plan, f"`{plan.dataset}.{staging}`")
            params = plan.statement_params()
            return self.execute(stmt, params)
        finally:
            self._drop(plan.dataset, staging)


def _resolve_partitions(plan: _LoadPlan, arrow: pa.Table) -> _LoadPlan:
    """Check the rows lie in the named partitions (or name the ones they lie in)."""
    column = arrow.column(plan.partition_column)
    nulls = column.null_count
    if nulls:
        raise ValueError(f"{nulls} row(s) have a NULL {plan.partition_column} (the partition column)")
    kind = plan.partitions.type
    present = {_coerce_partition_value(v, kind) for v in pc.unique(column).to_pylist()}
    if not plan.partitions.value:
        return dataclasses.replace(plan, partitions=Param(sorted(present), kind))
    outside = present - set(plan.partitions.value)
    if outside:
        shown = ", ".join(str(v) for v in sorted(outside)[:5])
        raise ValueError(
            f"replace_partitions into {plan.dataset}.{plan.table}: rows for partitions not in "
            f"partition_values ({shown}); name them or leave partition_values empty"
        )
    return plan


def _dedupe_on_keys(arrow: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    for k in key_columns:
        nulls = arrow.column(k).null_count
        if nulls:
            raise ValueError(f"{nulls} row(s) have a NULL key column {k!r}; filter or quarantine them first")
    if arrow.num_rows < 2:
        return arrow
    keys = arrow.select(list(key_columns)).to_pandas()
    keep = ~keys.duplicated(keep="last")
    if keep.all():
        return arrow
    return arrow.filter(pa.array(keep.to_numpy()))


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


def _json_text(value: Any) -> Optional[str]:
    """JSON column values: text is kept as is; dicts/lists/numbers are serialised."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode()
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _series_to_arrow(series: pd.Series, col: Column) -> pa.Array:
    kind = col.type
    if kind == "TIMESTAMP":
        series = pd.to_datetime(series, utc=True, format="mixed") if series.dtype == object else pd.to_datetime(series, utc=True)
    elif kind == "DATE":
        if series.dtype == object and all(
            isinstance(v, dt.date) and not isinstance(v, dt.datetime) for v in series.dropna()
        ):
            pass  # already dates
        else:
            series = pd.to_datetime(series, utc=True).dt.date
    elif kind == "JSON":
        series = series.map(_json_text).astype(object)
    # TIMESTAMP: BigQuery keeps microseconds; nanoseconds are truncated, not an error.
    return pa.array(series, type=_ARROW_TYPES[kind], from_pandas=True, safe=kind != "TIMESTAMP")


def _to_arrow(data: pd.DataFrame | pa.Table, schema: Sequence[Column]) -> pa.Table:
    """Arrow table with exactly ``schema``'s columns (missing ones NULL), in order."""
    if isinstance(data, pd.DataFrame):
        data = data.reset_index(drop=True)
        arrays = []
        for col in schema:
            if col.name in data.columns:
                try:
                    arrays.append(_series_to_arrow(data[col.name], col))
                except (pa.ArrowException, ValueError, TypeError) as exc:
                    raise ValueError(f"Column {col.name} ({col.type}): {exc}") from exc
            else:
                arrays.append(pa.nulls(len(data), type=_ARROW_TYPES[col.type]))
        return pa.Table.from_arrays(arrays, names=[c.name for c in schema])
    arrays = []
    for col in schema:
        if col.name in data.column_names:
            column = data.column(col.name)
            try:
                if col.type == "JSON" and not pa.types.is_string(column.type):
                    column = pa.array([_json_text(v) for v in column.to_pylist()], type=pa.string())
                arrays.append(column.cast(_ARROW_TYPES[col.type]))
            except (pa.ArrowException, ValueError, TypeError) as exc:
                raise ValueError(f"Column {col.name} ({col.type}): {exc}") from exc
        else:
            arrays.append(pa.nulls(data.num_rows, type=_ARROW_TYPES[col.type]))
    return pa.Table.from_arrays(arrays, names=[c.name for c in schema])


# ---------------------------------------------------------------------------------------
# Results: one conversion for both engines
# ---------------------------------------------------------------------------------------
def _normalise_field(field: pa.Field) -> pa.DataType:
    t = field.type
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_decimal(t) and t.scale == 0 and t.precision > 18:
        # DuckDB HUGEINT (SUM of BIGINT, COUNTIF ...): BigQuery returns INT64 there.
        return pa.int64()
    return t


def normalise_arrow(table: pa.Table) -> pa.Table:
    """BigQuery's Arrow types: INT64, FLOAT64, timestamps in µs (UTC when zoned)."""
    arrays, fields, changed = [], [], False
    for field, column in zip(table.schema, table.columns):
        target = _normalise_field(field)
        if isinstance(field.type, pa.ExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks], type=field.type.storage_type)
            changed = True
        if not column.type.equals(target):
            column = column.cast(target)
            changed = True
        arrays.append(column)
        fields.append(pa.field(field.name, target, nullable=field.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if changed else table


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """A DataFrame with the pandas types of ``google-cloud-bigquery``'s ``to_dataframe``."""
    import db_dtypes

    table = normalise_arrow(table)

    def mapper(t: pa.DataType):
        if pa.types.is_int64(t):
            return pd.Int64Dtype()
        if pa.types.is_boolean(t):
            return pd.BooleanDtype()
        if pa.types.is_date32(t):
            return db_dtypes.DateDtype()
        return None

    return table.to_pandas(types_mapper=mapper)


# ---------------------------------------------------------------------------------------
# DuckDB
# ---------------------------------------------------------------------------------------
def _bigquery_semantics(node):
    """Make the DuckDB output keep BigQuery's result types where sqlglot alone does not."""
    from sqlglot import exp

    parent = node.parent
    if isinstance(node, (exp.DateAdd, exp.DateSub, exp.DateTrunc)) and not isinstance(parent, exp.Cast):
        # BigQuery DATE_ADD/DATE_SUB/DATE_TRUNC return DATE; DuckDB's date +/- interval is a TIMESTAMP.
        return exp.cast(node, exp.DataType.build("DATE"))
    if isinstance(node, exp.UnixToTime) and not isinstance(parent, exp.Cast):
        # TIMESTAMP_MILLIS/MICROS: DuckDB's epoch_ms/make_timestamp are naive; BigQuery's are UTC.
        return exp.cast(node, exp.DataType.build("TIMESTAMPTZ"))
    if isinstance(node, exp.Extract) and isinstance(node.this, (exp.Var, exp.Identifier, exp.Column)):
        part = node.this.name.upper()
        if part == "DAYOFWEEK" and not isinstance(parent, exp.Add):
            # BigQuery DAYOFWEEK is 1 (Sunday) .. 7; DuckDB's is 0 .. 6.
            return exp.Paren(this=exp.Add(this=node, expression=exp.Literal.number(1)))
        if part == "ISOWEEK":
            # DuckDB's WEEK is the ISO week.
            return exp.Extract(this=exp.Var(this="WEEK"), expression=node.expression)
        if part == "WEEK":
            # BigQuery WEEK: weeks start on Sunday, days before the first Sunday are week 0.
            return exp.cast(
                exp.Anonymous(this="STRFTIME", expressions=[node.expression, exp.Literal.string("%U")]),
                exp.DataType.build("BIGINT"),
            )
    if (
        isinstance(node, exp.Literal)
        and not node.is_string
        and any(ch in node.this for ch in ".eE")
        and not isinstance(parent, (exp.Cast, exp.Interval))
    ):
        # BigQuery 2.5 is FLOAT64; DuckDB's is DECIMAL(2,1).
        return exp.cast(node, exp.DataType.build("DOUBLE"))
    return node


@functools.lru_cache(maxsize=2048)
def transpile_to_duckdb(sql: str, casts: tuple[tuple[str, str], ...] = ()) -> str:
    """BigQuery-dialect SQL -> DuckDB SQL (cached: the same file is run many times).

    ``casts``: ``(parameter name, BigQuery type)`` pairs; each ``@name`` is wrapped in a
    CAST to that type, so typed NULLs and (empty) arrays bind as BigQuery would type them.
    A few rewrites keep BigQuery's result types (see ``_bigquery_semantics``).
    """
    import sqlglot
    from sqlglot import exp

    trees = [t for t in sqlglot.parse(sql, read="bigquery") if t is not None]
    wanted = dict(casts)

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter):
            if node.name in wanted and not isinstance(node.parent, exp.Cast):
                return exp.cast(node.copy(), exp.DataType.build(wanted[node.name], dialect="bigquery"))
            return node
        return _bigquery_semantics(node)

    trees = [t.transform(rewrite) for t in trees]
    return ";\n".join(t.sql(dialect="duckdb") for t in trees)


def _used_parameters(duck_sql: str) -> set[str]:
    return set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", duck_sql))


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

    def _prepare(self, sql: str, params: Optional[Mapping[str, Any]]) -> tuple[str, Optional[dict]]:
        """DuckDB SQL and bound values; list and typed parameters are CAST as BigQuery types them."""
        bound = {k: _resolve_param(v) for k, v in (params or {}).items()}
        casts = tuple(sorted(
            (k, f"ARRAY<{b.type}>" if b.is_array else b.type)
            for k, b in bound.items()
            if b.is_array or b.explicit
        ))
        duck_sql = transpile_to_duckdb(sql, casts)
        used = _used_parameters(duck_sql)
        # DuckDB refuses parameters the statement does not use.
        values = {k: b.value for k, b in bound.items() if k in used}
        return duck_sql, values or None

    def _run(self, con: Any, sql: str, params: Optional[Mapping[str, Any]]):
        duck_sql, values = self._prepare(sql, params)
        try:
            return con.execute(duck_sql, values)
        except Exception as exc:
            raise WarehouseError(f"DuckDB statement failed: {exc}\n--- SQL ---\n{duck_sql}") from exc

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
        with self.connect() as con:
            cur = self._run(con, sql, params)
            return _duckdb_affected(cur)

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

    def _load_staged(self, arrow: pa.Table, plan: _LoadPlan) -> int:
        """Staged in a TEMP table and moved inside one DuckDB transaction."""
        staging = _staging_name(plan.table)
        params = plan.statement_params()
        if plan.mode == "replace_partitions":
            # DuckDB plans MERGE ... ON FALSE as a nested loop (quadratic in the table
            # size); inside this transaction DELETE + INSERT is just as atomic.
            target = f"`{plan.dataset}.{plan.table}`"
            cols = ", ".join(f"`{c.name}`" for c in plan.schema)
            stmts = [
                f"DELETE FROM {target} WHERE `{plan.partition_column}` IN UNNEST(@_partitions)",
                f"INSERT INTO {target} ({cols}) SELECT {cols} FROM `{plan.dataset}.{staging}`",
            ]
        else:
            stmts = [self._load_statement_for(plan, f"`{plan.dataset}.{staging}`")]
        prepared = []
        for stmt in stmts:
            duck_stmt, values = self._prepare(stmt, params)
            prepared.append((duck_stmt.replace(f'"{plan.dataset}"."{staging}"', f'temp.main."{staging}"'), values))
        casts = ", ".join(
            f'CAST("{c.name}" AS {_DUCKDB_TYPES[c.type]}) AS "{c.name}"' for c in plan.schema
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


# ---------------------------------------------------------------------------------------
# BigQuery
# ---------------------------------------------------------------------------------------
def _bq_param(name: str, value: Any):
    from google.cloud import bigquery

    bound = _resolve_param(value)
    if bound.is_array:
        return bigquery.ArrayQueryParameter(name, bound.type, bound.value)
    return bigquery.ScalarQueryParameter(name, bound.type, bound.value)


class BigQueryWarehouse(Warehouse):
    """Production warehouse on BigQuery (or the BigQuery API emulator when
    ``emulator_host`` is set: anonymous credentials, ``api_endpoint`` override)."""

    project: str
    location: str = "US"
    emulator_host: Optional[str] = None
    job_labels: dict[str, str] = {"app": "analytics_platform"}

    _client: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _datasets: Any = PrivateAttr(default_factory=set)

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

    def query_arrow(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> pa.Table:
        job = self._job(sql, params)
        try:
            table = job.result().to_arrow(create_bqstorage_client=False)
        except Exception as exc:
            raise WarehouseError(f"BigQuery result download failed: {exc}\n--- SQL ---\n{sql}") from exc
        return normalise_arrow(table)

    def execute(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> int:
        job = self._job(sql, params)
        return int(job.num_dml_affected_rows or 0)

    def ensure_dataset(self, dataset: str) -> None:
        from google.cloud import bigquery

        validate_identifier(dataset)
        if dataset in self._datasets:
            return
        ds = bigquery.Dataset(f"{self.project}.{dataset}")
        ds.location = self.location
        self.client.create_dataset(ds, exists_ok=True)
        self._datasets.add(dataset)

    def table_columns(self, dataset: str, table: str) -> list[str]:
        from google.api_core.exceptions import NotFound

        try:
            t = self.client.get_table(f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}")
        except NotFound:
            return []
        return [f.name for f in t.schema]

    def _drop(self, dataset: str, table: str) -> None:
        self.client.delete_table(
            f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}", not_found_ok=True
        )

    def _stage(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        """Load ``data`` (Parquet, exact types) into a staging table that expires in a day."""
        import io

        import pyarrow.parquet as pq
        from google.cloud import bigquery

        bq_schema = [bigquery.SchemaField(c.name, _BQ_LOAD_TYPES[c.type]) for c in schema]
        ref = f"{self.project}.{dataset}.{name}"
        staging = bigquery.Table(ref, schema=bq_schema)
        staging.expires = dt.datetime.now(_UTC) + dt.timedelta(days=1)  # if we die before the drop
        self.client.create_table(staging)
        buffer = io.BytesIO()
        pq.write_table(data, buffer)
        buffer.seek(0)
        cfg = bigquery.LoadJobConfig(
            schema=bq_schema,
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition="WRITE_APPEND",
            labels=dict(self.job_labels),
        )
        try:
            job = self.client.load_table_from_file(buffer, ref, job_config=cfg, location=self.location)
            job.result()
        except Exception as exc:
            self._drop(dataset, name)
            raise WarehouseError(f"BigQuery load into staging table {ref} failed: {exc}") from exc

    def _load_staged(self, arrow: pa.Table, plan: _LoadPlan) -> int:
        staging = _staging_name(plan.table)
        self._stage(arrow, plan.dataset, staging, plan.schema)
        try:
            json_cols = [c.name for c in plan.schema if c.type == "JSON"]
            if json_cols and plan.mode != "append":
                # A MERGE gets its JSON parsed in the staging table first: the BigQuery
                # emulator rejects PARSE_JSON(..., wide_number_mode=>...) inside MERGE.
                select = ", ".join(
                    f"PARSE_JSON(`{c.name}`, wide_number_mode=>'round') AS `{c.name}`"
                    if c.type == "JSON"
                    else f"`{c.name}`"
                    for c in plan.schema
                )
                self.execute(
                    f"CREATE OR REPLACE TABLE `{plan.dataset}.{staging}` AS "
                    f"SELECT {select} FROM `{plan.dataset}.{staging}`"
                )
                json_cols = []
            stmt = self._load_statement_for(plan, f"`{plan.dataset}.{staging}`", json_cols)
            params = plan.statement_params()
            return self.execute(stmt, params)
        finally:
            self._drop(plan.dataset, staging)
