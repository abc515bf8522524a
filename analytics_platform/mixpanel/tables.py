"""Table names and schemas of the mixpanel domain (contract: specs/mixpanel.md)."""

from __future__ import annotations

from analytics_platform.resources.warehouse import Column, Warehouse

REJECTED_TABLE = "mixpanel_events_rejected"
ANOMALIES_TABLE = "event_anomalies"
EXPORT_LOG_TABLE = "mixpanel_export_log"

# `{BIGQUERY_DATASET}.{BIGQUERY_TABLE}`: one row per event_id.
EVENTS_SCHEMA = (
    Column("event_id", "STRING", required=True),
    Column("event_name", "STRING"),
    Column("distinct_id", "STRING"),
    Column("event_timestamp", "TIMESTAMP"),
    Column("inserted_at", "TIMESTAMP"),
    Column("properties", "JSON"),
    Column("event_date", "DATE"),
    Column("device_id", "STRING"),
    Column("os", "STRING"),
    Column("mp_processing_time_ms", "INT64"),
)

# Lines of the export that could not be loaded, once per (partition_date, line).
REJECTED_SCHEMA = (
    Column("raw_line", "STRING"),
    Column("reason", "STRING"),
    Column("partition_date", "DATE"),
    Column("seen_at", "TIMESTAMP"),
    Column("line_hash", "STRING", required=True),
)

# One row per anomalous (event_name, window_start).
ANOMALIES_SCHEMA = (
    Column("event_name", "STRING", required=True),
    Column("window_start", "TIMESTAMP", required=True),
    Column("window_end", "TIMESTAMP"),
    Column("window_minutes", "INT64"),
    Column("event_count", "INT64"),
    Column("threshold", "INT64"),
    Column("channel", "STRING"),
    Column("detected_at", "TIMESTAMP"),
    Column("alert_status", "STRING"),
    Column("alerted_at", "TIMESTAMP"),
    Column("sample", "JSON"),
    Column("delivery_attempts", "INT64"),
    Column("last_error", "STRING"),
)


# The per-day export ledger (completeness record): one row per (day, run, export query)
# written by every ingestion run for each day it exported.
EXPORT_LOG_SCHEMA = (
    Column("day", "DATE", required=True),
    Column("run_id", "STRING", required=True),
    Column("export_query_time", "TIMESTAMP", required=True),
    Column("lines_received", "INT64"),
    Column("rows_inserted", "INT64"),
    Column("duplicates", "INT64"),
    Column("rejected", "INT64"),
    Column("export_from_date", "DATE"),
    Column("export_to_date", "DATE"),
    Column("purpose", "STRING"),
    Column("recorded_at", "TIMESTAMP"),
)


def ensure_events_table(warehouse: Warehouse, dataset: str, table: str) -> None:
    """Create the events table if missing, partitioned by ``event_date`` and clustered by
    ``event_name, event_id`` (the scans every job does).  An existing table of another
    layout (the old collector's) fails here, before anything is written
    (``migrate.check_events_table``: the differences and the migration command)."""
    from analytics_platform.mixpanel.migrate import check_events_table

    check_events_table(warehouse, dataset, table)
    warehouse.ensure_table(
        dataset, table, EVENTS_SCHEMA, partition_by="event_date", cluster_by=("event_name", "event_id")
    )


def ensure_rejected_table(warehouse: Warehouse, dataset: str) -> None:
    warehouse.ensure_table(dataset, REJECTED_TABLE, REJECTED_SCHEMA, partition_by="partition_date")


def ensure_anomalies_table(warehouse: Warehouse, dataset: str) -> None:
    warehouse.ensure_table(
        dataset, ANOMALIES_TABLE, ANOMALIES_SCHEMA, partition_by="DATE(window_start)", cluster_by=("event_name",)
    )


def ensure_export_log_table(warehouse: Warehouse, dataset: str) -> None:
    warehouse.ensure_table(dataset, EXPORT_LOG_TABLE, EXPORT_LOG_SCHEMA, partition_by="day")
