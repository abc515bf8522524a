"""Production warehouse on BigQuery (or the BigQuery API emulator when ``emulator_host``
is set: anonymous credentials, ``api_endpoint`` override)."""

from __future__ import annotations

import datetime as dt
import io
import threading
from typing import Any, Mapping, Optional, Sequence

import pyarrow as pa
from pydantic import PrivateAttr

from analytics_platform.common import UTC, read_sql, render_sql, validate_identifier
from analytics_platform.resources.warehouse.arrow_types import normalise_arrow, to_arrow
from analytics_platform.resources.warehouse.base import Warehouse
from analytics_platform.resources.warehouse.ddl import add_column_statement, create_table_statement
from analytics_platform.resources.warehouse.load_plans import LoadPlan, load_statement, plan_load, staging_name
from analytics_platform.resources.warehouse.schema import Column, WarehouseError, resolve_param

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

    def column_types(self, dataset: str, table: str) -> dict[str, str]:
        from google.api_core.exceptions import NotFound

        try:
            t = self.client.get_table(f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}")
        except NotFound:
            return {}
        legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
        return {f.name: legacy.get(f.field_type, f.field_type) for f in t.schema}

    def _create_table(self, dataset, table, schema, partition_by, cluster_by) -> None:
        self.execute(create_table_statement(dataset, table, schema, partition_by, cluster_by))

    def _add_column(self, dataset: str, table: str, column: Column) -> None:
        self.execute(add_column_statement(dataset, table, column))

    def _drop(self, dataset: str, table: str) -> None:
        self.client.delete_table(
            f"{self.project}.{validate_identifier(dataset)}.{validate_identifier(table)}", not_found_ok=True
        )

    def _stage(self, data: pa.Table, dataset: str, name: str, schema: Sequence[Column]) -> None:
        """Load ``data`` (Parquet, exact types; JSON as STRING) into a new staging table
        that expires after ``STAGING_EXPIRY`` (if we die before the drop)."""
        import pyarrow.parquet as pq
        from google.cloud import bigquery

        bq_schema = [bigquery.SchemaField(c.name, _BQ_LOAD_TYPES[c.type]) for c in schema]
        ref = f"{self.project}.{dataset}.{name}"
        staging = bigquery.Table(ref, schema=bq_schema)
        staging.expires = dt.datetime.now(UTC) + STAGING_EXPIRY
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
        from google.cloud import bigquery

        self.ensure_dataset(batch_dataset)
        staging = staging_name("batch")
        sql = render_sql(read_sql(sql_name), batch_dataset=batch_dataset, batch=staging, **identifiers)
        table = bigquery.Table(
            f"{self.project}.{batch_dataset}.{staging}",
            schema=[bigquery.SchemaField(c.name, _TABLE_TYPES[c.type]) for c in batch_schema],
        )
        table.expires = dt.datetime.now(UTC) + STAGING_EXPIRY
        self.client.create_table(table)
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
