"""The warehouse: one interface, two engines; the only code that knows DuckDB.

SQL is written once in BigQuery Standard SQL (files under ``analytics_platform/sql``).
``BigQueryWarehouse`` runs it on BigQuery (or the BigQuery API emulator);
``DuckDBWarehouse`` transpiles it with sqlglot and runs it on a local DuckDB file whose
schemas are named after the BigQuery datasets.  Values are always bound parameters
(``@name``); dataset/table identifiers are validated before they are formatted in.

Both engines return the same pandas types from :meth:`Warehouse.query` (those of
``google-cloud-bigquery``, see :mod:`.arrow_types`); parameters are typed as BigQuery
types them (see :mod:`.schema`).

  schema.py           Column, Param, LoadResult, WarehouseError, BQ_TYPES, parameter typing
  base.py             the Warehouse interface (ConfigurableResource) and the shared methods
  load_plans.py       load plans and the INSERT / MERGE statement moving staged rows
  ddl.py              CREATE TABLE (PARTITION BY, CLUSTER BY), ALTER TABLE, TableLayout
  write_lock.py       Warehouse.write_batch: the lock row, the transaction script, retries
  arrow_types.py      rows in (pandas/Arrow -> a schema's Arrow types) and results out
  transpile.py        BigQuery SQL -> DuckDB SQL
  duckdb_engine.py    DuckDBWarehouse
  bigquery_engine.py  BigQueryWarehouse
"""

from analytics_platform.common import SQL_DIR, read_sql, render_sql, validate_identifier
from analytics_platform.resources.warehouse.arrow_types import arrow_to_pandas, normalise_arrow, to_arrow
from analytics_platform.resources.warehouse.base import Warehouse
from analytics_platform.resources.warehouse.bigquery_engine import (
    STAGING_EXPIRY,
    BigQueryWarehouse,
    parse_json_copy_statement,
)
from analytics_platform.resources.warehouse.ddl import (
    TableLayout,
    add_column_statement,
    expected_partitioning,
    rename_table_statement,
    create_table_statement,
    validate_table_layout,
)
from analytics_platform.resources.warehouse.duckdb_engine import DUCKDB_TYPES, DuckDBWarehouse
from analytics_platform.resources.warehouse.load_plans import (
    LOAD_MODES,
    LoadMode,
    LoadPlan,
    delete_partitions_statement,
    insert_staged_statement,
    load_statement,
    plan_load,
)
from analytics_platform.resources.warehouse.schema import (
    BQ_TYPES,
    Column,
    LoadResult,
    Param,
    WarehouseError,
    column_schema,
)
from analytics_platform.resources.warehouse.transpile import transpile_to_duckdb

__all__ = [
    "BQ_TYPES",
    "column_schema",
    "DUCKDB_TYPES",
    "LOAD_MODES",
    "SQL_DIR",
    "STAGING_EXPIRY",
    "BigQueryWarehouse",
    "Column",
    "DuckDBWarehouse",
    "LoadMode",
    "LoadPlan",
    "LoadResult",
    "Param",
    "TableLayout",
    "Warehouse",
    "WarehouseError",
    "add_column_statement",
    "arrow_to_pandas",
    "create_table_statement",
    "delete_partitions_statement",
    "expected_partitioning",
    "rename_table_statement",
    "insert_staged_statement",
    "load_statement",
    "normalise_arrow",
    "parse_json_copy_statement",
    "plan_load",
    "read_sql",
    "render_sql",
    "to_arrow",
    "transpile_to_duckdb",
    "validate_identifier",
    "validate_table_layout",
]
