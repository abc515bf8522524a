"""BigQuery DDL the warehouse builds (pure functions: no client, no connection).

``BigQueryWarehouse.ensure_table`` sends :func:`create_table_statement` and
:func:`add_column_statement` as they are; the DuckDB engine writes its own CREATE TABLE
(DuckDB types, storage hints) and runs the ALTER TABLE through the transpiler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from analytics_platform.common import validate_identifier
from analytics_platform.resources.warehouse.schema import Column

# PARTITION BY: a column, DATE(col), or {DATE,TIMESTAMP}_TRUNC(col, unit).
_PARTITION_EXPR = re.compile(
    r"^(?:(?P<col>[A-Za-z_][A-Za-z0-9_]*)"
    r"|DATE\(\s*(?P<dcol>[A-Za-z_][A-Za-z0-9_]*)\s*\)"
    r"|(?:DATE|TIMESTAMP|DATETIME)_TRUNC\(\s*(?P<tcol>[A-Za-z_][A-Za-z0-9_]*)\s*,\s*(?:HOUR|DAY|MONTH|YEAR)\s*\))$",
    re.IGNORECASE,
)


def validate_table_layout(
    dataset: str, table: str, partition_by: Optional[str] = None, cluster_by: Sequence[str] = ()
) -> None:
    """Raise ValueError unless the names are identifiers and ``partition_by`` is a column,
    ``DATE(col)`` or ``{DATE,TIMESTAMP,DATETIME}_TRUNC(col, HOUR|DAY|MONTH|YEAR)``."""
    validate_identifier(dataset)
    validate_identifier(table)
    if partition_by is not None and not _PARTITION_EXPR.match(partition_by.strip()):
        raise ValueError(f"Invalid partition_by {partition_by!r}")
    for c in cluster_by:
        validate_identifier(c)


def create_table_statement(
    dataset: str,
    table: str,
    schema: Sequence[Column],
    partition_by: Optional[str] = None,
    cluster_by: Sequence[str] = (),
) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with BigQuery types, PARTITION BY and CLUSTER BY."""
    validate_table_layout(dataset, table, partition_by, cluster_by)
    cols = ", ".join(f"`{c.name}` {c.type}{' NOT NULL' if c.required else ''}" for c in schema)
    sql = f"CREATE TABLE IF NOT EXISTS `{dataset}.{table}` ({cols})"
    if partition_by:
        sql += f" PARTITION BY {partition_by.strip()}"
    if cluster_by:
        sql += " CLUSTER BY " + ", ".join(f"`{c}`" for c in cluster_by)
    return sql


def add_column_statement(dataset: str, table: str, column: Column) -> str:
    """``ALTER TABLE ... ADD COLUMN`` (always NULLABLE: existing rows get NULL)."""
    return (
        f"ALTER TABLE `{validate_identifier(dataset)}.{validate_identifier(table)}` "
        f"ADD COLUMN `{column.name}` {column.type}"
    )


@dataclass(frozen=True)
class TableLayout:
    """What ``Warehouse.table_layout`` reports of an existing table.

    ``columns``: ``(name, BigQuery standard type)`` in order.  ``partitioning``: BigQuery's
    time partitioning as ``"<column> <DAY|HOUR|MONTH|YEAR>"`` (``"_PARTITIONTIME DAY"`` for
    ingestion-time partitioning, ``"RANGE <column>"`` for integer-range), ``None`` when the
    table is not partitioned; ``clustering``: the clustering columns.  An engine without
    physical layout (DuckDB) reports ``physical=False`` and neither.
    """

    columns: tuple[tuple[str, str], ...]
    partitioning: Optional[str] = None
    clustering: tuple[str, ...] = ()
    physical: bool = True

    def column_types(self) -> dict[str, str]:
        return dict(self.columns)


def expected_partitioning(partition_by: Optional[str]) -> Optional[str]:
    """The :attr:`TableLayout.partitioning` BigQuery reports for a ``partition_by`` given
    to ``ensure_table`` (``event_date`` -> ``"event_date DAY"``, ``DATE(ts)`` ->
    ``"ts DAY"``, ``TIMESTAMP_TRUNC(ts, HOUR)`` -> ``"ts HOUR"``)."""
    if partition_by is None:
        return None
    m = _PARTITION_EXPR.match(partition_by.strip())
    if not m:
        raise ValueError(f"Invalid partition_by {partition_by!r}")
    if m.group("col"):
        return f"{m.group('col')} DAY"
    if m.group("dcol"):
        return f"{m.group('dcol')} DAY"
    unit = re.search(r",\s*(HOUR|DAY|MONTH|YEAR)\s*\)$", partition_by.strip(), re.IGNORECASE).group(1).upper()
    return f"{m.group('tcol')} {unit}"


def rename_table_statement(dataset: str, table: str, new_name: str) -> str:
    """``ALTER TABLE ... RENAME TO`` (same dataset)."""
    return (
        f"ALTER TABLE `{validate_identifier(dataset)}.{validate_identifier(table)}` "
        f"RENAME TO `{validate_identifier(new_name)}`"
    )
