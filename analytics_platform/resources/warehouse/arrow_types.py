"""Arrow and pandas types, one conversion for both engines.

In: rows (pandas or Arrow) become an Arrow table with exactly a schema's columns and
types (:func:`to_arrow`).  Out: both engines' results get BigQuery's Arrow types
(:func:`normalise_arrow`) and the pandas types of ``google-cloud-bigquery``
(:func:`arrow_to_pandas`): INT64 -> ``Int64``, BOOL -> ``boolean``, DATE -> ``dbdate``,
TIMESTAMP -> ``datetime64[us, UTC]``, NUMERIC -> ``Decimal``, JSON -> ``str`` (the JSON
text), FLOAT64 -> ``float64``, STRING -> ``object``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Optional, Sequence

import pandas as pd
import pyarrow as pa

from analytics_platform.resources.warehouse.schema import Column

ARROW_TYPES = {
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


def json_text(value: Any) -> Optional[str]:
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
        series = series.map(json_text).astype(object)
    # TIMESTAMP: BigQuery keeps microseconds; nanoseconds are truncated, not an error.
    return pa.array(series, type=ARROW_TYPES[kind], from_pandas=True, safe=kind != "TIMESTAMP")


def _is_text(type_: pa.DataType) -> bool:
    """Arrow text of any layout: string, large_string, string_view, or the canonical JSON
    extension over one of them (text known to be valid JSON)."""
    if isinstance(type_, pa.BaseExtensionType):
        type_ = type_.storage_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def to_arrow(data: pd.DataFrame | pa.Table, schema: Sequence[Column], *, text_as_is: bool = False) -> pa.Table:
    """Arrow table with exactly ``schema``'s columns (missing ones NULL), in order.

    ``text_as_is``: STRING and JSON columns keep their Arrow text layout (string views, the
    JSON extension) instead of being copied into plain strings: for a reader that takes
    them all (DuckDB, which reads the JSON extension as its JSON type)."""
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
                arrays.append(pa.nulls(len(data), type=ARROW_TYPES[col.type]))
        return pa.Table.from_arrays(arrays, names=[c.name for c in schema])
    arrays = []
    for col in schema:
        if col.name in data.column_names:
            column = data.column(col.name)
            try:
                if text_as_is and col.type in ("STRING", "JSON") and _is_text(column.type):
                    arrays.append(column)
                    continue
                if col.type == "JSON" and not _is_text(column.type):
                    column = pa.array([json_text(v) for v in column.to_pylist()], type=pa.string())
                if isinstance(column.type, pa.BaseExtensionType):
                    column = pa.chunked_array(
                        [c.storage for c in getattr(column, "chunks", [column])], type=column.type.storage_type
                    )
                arrays.append(column.cast(ARROW_TYPES[col.type]))
            except (pa.ArrowException, ValueError, TypeError) as exc:
                raise ValueError(f"Column {col.name} ({col.type}): {exc}") from exc
        else:
            arrays.append(pa.nulls(data.num_rows, type=ARROW_TYPES[col.type]))
    return pa.Table.from_arrays(arrays, names=[c.name for c in schema])


def _normalise_field(field: pa.Field) -> pa.DataType:
    t = field.type
    if isinstance(t, pa.BaseExtensionType):
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
        if isinstance(field.type, pa.BaseExtensionType):
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
