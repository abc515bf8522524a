"""Production warehouse on BigQuery (or the BigQuery API emulator when ``emulator_host``
is set: anonymous credentials, ``api_endpoint`` override)."""

from __future__ import annotations

import datetime as dt
import io
import threading
from typing import Any, Mapping, Optional, Sequence

import pyarrow as pa
from pydantic import PrivateAttr

from analytics_platform.common import UTC, read_sql, render_sql, strip_sql_comments, validate_identifier
from analytics_platform.resources.warehouse.arrow_types import normalise_arrow, to_arrow
from analytics_platform.resources.warehouse.base import Warehouse
from analytics_platform.resources.warehouse.ddl import TableLayout, add_column_statement, create_table_statement
from analytics_platform.resources.warehouse.load_plans import LoadPlan, load_statement, plan_load, staging_name
from analytics_platform.resources.warehouse.schema import Column, WarehouseError, resolve_param
from analytics_platform.resources.warehouse.write_lock import (
    WRITE_LOCKS_SCHEMA,
    WRITE_LOCKS_TABLE,
    bigquery_write_script,
)

# Types of the load-job schema (legacy names); JSON travels as STRING and is parsed by
# the statement that moves the staged rows (see parse_json_copy_statement).
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
_TABLE_TYPES = {**_BQ_LOAD_TYPES, "JSON": "JSON"}
# A staging table expires by itself if the process dies before it drops it.
STAGING_EXPIRY = dt.timedelta(hours=1)


def parse_json_copy_statement(dataset: str, staging: str, schema: Sequence[Column]) -> str:
    """Re-create a staging table with its JSON columns (staged as STRING) parsed."""
    select = ", ".join(
        f"PARSE_JSON(`{c.name}`, wide_number_mode=>'round') AS `{c.name}`" if c.type == "JSON" else f"`{c.name}`"
        for c in schema
    )
    ref = f"`{validate_identifier(dataset)}.{validate_identifier(staging)}`"
    return f"CREATE OR REPLACE TABLE {ref} AS SELECT {select} FROM {ref}"


def _bq_param(name: str, value: Any):
    from google.cloud import bigquery

    bound = resolve_param(value)
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
    _lock_tables: Any = PrivateAttr(default_factory=set)

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

    def table_layout(self, dataset: str, table: str) -> Optional[TableLayout]:
        from google.api_core.exceptions import NotFound

        try:
            t = self.client.get_table(f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}")
        except NotFound:
            return None
        standard = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
        columns = tuple((f.name, standard.get(f.field_type, f.field_type)) for f in t.schema)
        partitioning = None
        if t.time_partitioning is not None:
            field = t.time_partitioning.field or "_PARTITIONTIME"
            partitioning = f"{field} {t.time_partitioning.type_ or 'DAY'}"
        elif t.range_partitioning is not None:
            partitioning = f"RANGE {t.range_partitioning.field}"
        return TableLayout(columns, partitioning, tuple(t.clustering_fields or ()))

    def drop_table(self, dataset: str, table: str) -> None:
        self._drop(dataset, table)

    def _create_table(self, dataset, table, schema, partition_by, cluster_by) -> None:
        self.execute(create_table_statement(dataset, table, schema, partition_by, cluster_by))

    def _add_column(self, dataset: str, table: str, column: Column) -> None:
        self.execute(add_column_statement(dataset, table, column))

    def _drop(self, dataset: str, table: str) -> None:
        self.client.delete_table(
            f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}", not_found_ok=True
        )

    def _create_staging_table(self, dataset: str, name: str, schema: Sequence[Column], types=None) -> None:
        """Create ``dataset.name`` with its expiry in the SAME request (``expirationTime`` of
        tables.insert): there is no moment at which the table exists without one, so a
        process that dies at any point leaves nothing behind for longer than
        ``STAGING_EXPIRY``."""
        from google.cloud import bigquery

        types = types or _BQ_LOAD_TYPES
        staging = bigquery.Table(
            f"{self.project}.{dataset}.{name}",
            schema=[bigquery.SchemaField(c.name, types[c.type]) for c in schema],
        )
        staging.expires = dt.datetime.now(UTC) + STAGING_EXPIRY
        self.client.create_table(staging)

    def _load_parquet(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        """Append ``data`` (Parquet, exact types; JSON as STRING) to the staging table."""
        import pyarrow.parquet as pq
        from google.cloud import bigquery

        bq_schema = [bigquery.SchemaField(c.name, _BQ_LOAD_TYPES[c.type]) for c in schema]
        ref = f"{self.project}.{dataset}.{name}"
        buffer = io.BytesIO()
        pq.write_table(data, buffer)
        buffer.seek(0)
        cfg = bigquery.LoadJobConfig(
            schema=bq_schema,
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition="WRITE_APPEND",
            labels=dict(self.job_labels),
        )
        job = self.client.load_table_from_file(buffer, ref, job_config=cfg, location=self.location)
        job.result()

    def _stage(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        """Load ``data`` (Parquet, exact types; JSON as STRING) into a new staging table
        that expires after ``STAGING_EXPIRY`` (if we die before the drop)."""
        self._create_staging_table(dataset, name, schema)
        try:
            self._load_parquet(data, dataset, name, schema)
        except Exception as exc:
            self._drop(dataset, name)
            raise WarehouseError(f"BigQuery load into staging table {dataset}.{name} failed: {exc}") from exc

    def _load_staged(self, arrow: pa.Table, plan: LoadPlan) -> int:
        staging = staging_name(plan.table)
        self._stage(arrow, plan.dataset, staging, plan.schema)
        try:
            json_cols = [c.name for c in plan.schema if c.type == "JSON"]
            if json_cols and plan.mode != "append":
                # A MERGE gets its JSON parsed in the staging table first: the BigQuery
                # emulator rejects PARSE_JSON(..., wide_number_mode=>...) inside MERGE.
                self.execute(parse_json_copy_statement(plan.dataset, staging, plan.schema))
                json_cols = []
            return self.execute(load_statement(plan, staging, json_cols), plan.statement_params())
        finally:
            self._drop(plan.dataset, staging)

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
        """One load job stages the batch (Parquet; JSON columns as STRING) in a table created
        with its expiry; ONE script job runs the transaction (:func:`bigquery_write_script`),
        retried while a concurrent writer of the lock cancels it; the table is dropped."""
        self.ensure_dataset(batch_dataset)
        if batch_dataset not in self._lock_tables:  # the script makes sure of the lock's row
            self.ensure_table(batch_dataset, WRITE_LOCKS_TABLE, WRITE_LOCKS_SCHEMA)
            self._lock_tables.add(batch_dataset)
        staging = staging_name("batch")
        statements = [
            strip_sql_comments(render_sql(read_sql(n), batch_dataset=batch_dataset, batch=staging, **identifiers))
            for n in sql_names
        ]
        script = bigquery_write_script(batch_dataset, statements, self._guards(sql_names, run_if_positive))
        script_params = {**(params or {}), **self._lock_params(lock)}
        self._create_staging_table(batch_dataset, staging, batch_schema)
        try:
            arrow = to_arrow(batch, batch_schema)
            if arrow.num_rows:
                try:
                    self._load_parquet(arrow, batch_dataset, staging, batch_schema)
                except Exception as exc:
                    raise WarehouseError(f"BigQuery load into staging table {batch_dataset}.{staging} failed: {exc}") from exc

            def attempt() -> list[int]:
                try:
                    row = self.query_arrow(script, script_params)
                except WarehouseError as exc:
                    raise WarehouseError(f"batch write {list(sql_names)}: {exc}") from exc
                return [int(row.column(f"n{i}")[0].as_py() or 0) for i in range(len(statements))]

            return self._retry_on_conflict(attempt)
        finally:
            self._drop(batch_dataset, staging)

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
        """The batch is loaded into a table of ``batch_dataset`` with ``batch_schema``'s
        types (it expires after ``STAGING_EXPIRY`` should the drop never run), the
        statement run, the table dropped."""
        self.ensure_dataset(batch_dataset)
        staging = staging_name("batch")
        sql = render_sql(read_sql(sql_name), batch_dataset=batch_dataset, batch=staging, **identifiers)
        self._create_staging_table(batch_dataset, staging, batch_schema, _TABLE_TYPES)
        try:
            arrow = to_arrow(batch, batch_schema)
            if arrow.num_rows:  # append: Parquet staged (JSON as STRING), INSERT ... PARSE_JSON
                self._load_staged(arrow, plan_load(batch_dataset, staging, batch_schema))
            try:
                return self.execute(sql, params)
            except WarehouseError as exc:
                raise WarehouseError(f"{sql_name}: {exc}") from exc
        finally:
            self._drop(batch_dataset, staging)
