"""The warehouse's vocabulary: column declarations, typed parameters, load results,
the error type, and how a Python value is typed as a BigQuery parameter.

Parameters: Python values are typed like BigQuery does (``int`` -> INT64, ``datetime``
-> TIMESTAMP in UTC, naive = UTC, ``date`` -> DATE, lists -> ARRAY of the first
element's type).  A NULL scalar or an empty list has no type of its own: wrap it in
:class:`Param` (``Param([], "INT64")``) when the SQL needs one; untyped ones are STRING.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Sequence

import pandas as pd

from analytics_platform.common import UTC, validate_identifier

BQ_TYPES = ("STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "DATE", "JSON", "NUMERIC", "BYTES")


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


def to_utc(value: Any) -> Any:
    """Datetimes as aware UTC (naive = UTC; NaT -> None); any other value unchanged."""
    if isinstance(value, pd.Timestamp):
        if pd.isna(value):
            return None
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return value


def scalar_type(value: Any) -> str:
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
class Bound:
    """A parameter resolved for binding: UTC-normalised value, BigQuery type, array?"""

    value: Any
    type: str
    is_array: bool
    explicit: bool


def resolve_param(value: Any) -> Bound:
    explicit = isinstance(value, Param)
    kind = value.type if explicit else None
    raw = value.value if explicit else value
    if isinstance(raw, (list, tuple)):
        items = [to_utc(v) for v in raw]
        if kind is None:
            first = next((v for v in items if v is not None), None)
            kind = scalar_type(first) if first is not None else "STRING"
        return Bound(items, kind, True, explicit)
    raw = to_utc(raw)
    if kind is None:
        kind = scalar_type(raw) if raw is not None else "STRING"
    return Bound(raw, kind, False, explicit)


def column_schema(columns: Sequence[Column]) -> Any:
    """The ``dagster/column_schema`` of a table declared as ``Column``s (the UI's columns
    tab; a required column is not nullable)."""
    import dagster as dg

    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.type, constraints=dg.TableColumnConstraints(nullable=not c.required))
            for c in columns
        ]
    )
