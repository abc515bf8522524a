"""Load plans: a :meth:`Warehouse.load` call validated before anything touches the
warehouse, the batch prepared for its mode (keys de-duplicated, partitions named), and
the one BigQuery-dialect statement that moves the staged rows into the table
(INSERT, or MERGE for replace_partitions / merge / insert_missing).

Every function here is pure (no client, no connection): :func:`load_statement` is the
exact text ``BigQueryWarehouse`` sends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics_platform.common import UTC, validate_identifier
from analytics_platform.resources.warehouse.schema import Column, Param, to_utc

LoadMode = Literal["append", "replace_partitions", "merge", "insert_missing"]
LOAD_MODES = ("append", "replace_partitions", "merge", "insert_missing")


@dataclass(frozen=True)
class LoadPlan:
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


def plan_load(
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
) -> LoadPlan:
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
        partitions = Param(sorted({coerce_partition_value(v, kind) for v in partition_values}), kind)
    if match_filter and mode not in ("merge", "insert_missing"):
        raise ValueError("match_filter applies to merge and insert_missing only")
    return LoadPlan(
        mode, dataset, table, tuple(schema), tuple(key_columns), partition_column,
        tuple(preserve_on_update), partitions,
        match_filter or None, dict(match_params or {}) if match_filter else None,
    )


def prepare_batch(plan: LoadPlan, arrow: pa.Table) -> tuple[LoadPlan, pa.Table]:
    """The batch as the mode needs it: keys de-duplicated (merge / insert_missing), the
    partitions to replace checked or named from the rows (replace_partitions)."""
    if plan.mode in ("merge", "insert_missing"):
        arrow = dedupe_on_keys(arrow, plan.key_columns)
    if plan.mode == "replace_partitions":
        plan = resolve_partitions(plan, arrow)
    return plan, arrow


def coerce_partition_value(value: Any, kind: str) -> Any:
    """A partition value as the Python value of the partition column's type (UTC)."""
    if value is None:
        raise ValueError("partition_values must not contain NULL")
    if kind == "DATE":
        if isinstance(value, str):
            return dt.date.fromisoformat(value[:10])
        if isinstance(value, (dt.datetime, pd.Timestamp)):
            return to_utc(value).date()
        if isinstance(value, dt.date):
            return value
    elif kind == "TIMESTAMP":
        if isinstance(value, str):
            return to_utc(pd.Timestamp(value))
        if isinstance(value, (dt.datetime, pd.Timestamp)):
            return to_utc(value)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif kind == "INT64":
        return int(value)
    elif kind == "STRING":
        return str(value)
    elif kind == "BOOL":
        return bool(value)
    else:
        raise ValueError(f"replace_partitions does not support a {kind} partition column")
    raise ValueError(f"Cannot use {value!r} as a {kind} partition value")


def resolve_partitions(plan: LoadPlan, arrow: pa.Table) -> LoadPlan:
    """Check the rows lie in the named partitions (or name the ones they lie in)."""
    column = arrow.column(plan.partition_column)
    nulls = column.null_count
    if nulls:
        raise ValueError(f"{nulls} row(s) have a NULL {plan.partition_column} (the partition column)")
    kind = plan.partitions.type
    present = {coerce_partition_value(v, kind) for v in pc.unique(column).to_pylist()}
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


def dedupe_on_keys(arrow: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """One row per key (the last one wins); a NULL key is an error (it never matches)."""
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


def staging_name(table: str) -> str:
    """A fresh staging table name for a load into ``table``."""
    return f"_stage_{table}_{uuid.uuid4().hex[:10]}"


# --- statements (BigQuery dialect) ----------------------------------------------------
def load_statement(plan: LoadPlan, staging: str, parse_json: Sequence[str] = ()) -> str:
    """The statement moving the rows of ``plan.dataset.<staging>`` into the plan's table.

    ``parse_json``: staged STRING columns to convert with PARSE_JSON on the way in.
    Parameters: ``@_partitions`` (replace_partitions) and the plan's ``match_params``
    (see :meth:`LoadPlan.statement_params`).
    """
    target = f"`{plan.dataset}.{plan.table}`"
    source = f"`{plan.dataset}.{validate_identifier(staging)}`"
    columns = [c.name for c in plan.schema]

    def src(c: str, alias: str = "S.") -> str:
        ref = f"{alias}`{c}`"
        return f"PARSE_JSON({ref}, wide_number_mode=>'round')" if c in parse_json else ref

    cols = ", ".join(f"`{c}`" for c in columns)
    src_cols = ", ".join(src(c) for c in columns)
    if plan.mode == "append":
        return f"INSERT INTO {target} ({cols}) SELECT {', '.join(src(c, '') for c in columns)} FROM {source}"
    if plan.mode == "replace_partitions":
        return (
            f"MERGE {target} T USING {source} S ON FALSE "
            f"WHEN NOT MATCHED BY SOURCE AND T.`{plan.partition_column}` IN UNNEST(@_partitions) THEN DELETE "
            f"WHEN NOT MATCHED BY TARGET THEN INSERT ({cols}) VALUES ({src_cols})"
        )
    on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in plan.key_columns)
    if plan.match_filter:
        # Extra condition on the target rows (e.g. a partition range): prunes the target
        # scan on BigQuery; target rows outside it never match.
        on = f"{on} AND ({plan.match_filter})"
    insert = f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({src_cols})"
    if plan.mode == "insert_missing":
        return f"MERGE {target} T USING {source} S ON {on} {insert}"
    updatable = [c for c in columns if c not in plan.key_columns and c not in plan.preserve_on_update]
    update = ", ".join(f"`{c}` = {src(c)}" for c in updatable)
    matched = f"WHEN MATCHED THEN UPDATE SET {update} " if updatable else ""
    return f"MERGE {target} T USING {source} S ON {on} {matched}{insert}"


def delete_partitions_statement(plan: LoadPlan) -> str:
    """DELETE of the rows in the partitions ``@_partitions`` (replace_partitions)."""
    return (
        f"DELETE FROM `{plan.dataset}.{plan.table}` "
        f"WHERE `{plan.partition_column}` IN UNNEST(@_partitions)"
    )


def insert_staged_statement(plan: LoadPlan, staging: str) -> str:
    """Plain INSERT of every staged row (the insert half of replace_partitions where
    DELETE + INSERT run inside one transaction)."""
    cols = ", ".join(f"`{c.name}`" for c in plan.schema)
    return (
        f"INSERT INTO `{plan.dataset}.{plan.table}` ({cols}) "
        f"SELECT {cols} FROM `{plan.dataset}.{validate_identifier(staging)}`"
    )
