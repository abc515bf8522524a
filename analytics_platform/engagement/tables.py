"""Warehouse tables of the engagement domain (dataset ``ENGAGEMENT_DATASET``, default
``engagement``): the mirror of the Firestore event documents, its quarantine and cursor,
and the per-user aggregates behind each signals row. The results themselves
(``user_engagement_signals``, ``user_milestones``) live in the application PostgreSQL
(created by ``analytics_platform.migrations``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from analytics_platform.resources.warehouse import Column

EVENTS_TABLE = "firestore_app_usage_events"
REJECTS_TABLE = "firestore_app_usage_event_rejects"
CURSORS_TABLE = "extraction_cursors"
AGGREGATES_TABLE = "user_engagement_aggregates"
GOALS_BATCH = "goal_batch"  # name prefix of the goal batch a run stages (BigQuery only)

# One row per valid event document; upserted by document_path.
EVENTS_SCHEMA: list[Column] = [
    Column("document_path", "STRING", required=True),  # app_usage_events/{userId}/events/{eventId}
    Column("user_id", "STRING", required=True),
    Column("event_id", "STRING", required=True),
    Column("app_id", "STRING", required=True),
    Column("foreground_time_ms", "INT64", required=True),
    Column("session_id", "STRING", required=True),
    Column("event_timestamp", "TIMESTAMP", required=True),
    Column("event_date", "DATE", required=True),  # UTC date of event_timestamp: the partition
    Column("extracted_at", "TIMESTAMP", required=True),
]
EVENTS_PARTITION_BY = "event_date"
EVENTS_CLUSTER_BY = ("user_id",)

# Documents that failed validation, with the reasons (quarantine; upserted by path).
REJECTS_SCHEMA: list[Column] = [
    Column("document_path", "STRING", required=True),
    Column("user_id", "STRING"),
    Column("event_id", "STRING"),
    Column("reasons", "STRING", required=True),
    Column("raw_fields", "STRING"),  # the document as read, JSON text
    Column("event_timestamp", "TIMESTAMP"),
    Column("first_seen_at", "TIMESTAMP", required=True),
    Column("last_seen_at", "TIMESTAMP", required=True),
]

# Position of the incremental read, written after the data of each batch (upserts make a
# re-read after a crash harmless); complete_until = end of the last read of every page.
CURSORS_SCHEMA: list[Column] = [
    Column("source", "STRING", required=True),
    Column("cursor_timestamp", "TIMESTAMP"),
    Column("cursor_document_path", "STRING"),
    Column("documents_read_total", "INT64", required=True),
    Column("updated_at", "TIMESTAMP", required=True),
    Column("complete_until", "TIMESTAMP"),
]

# The per-user aggregates behind each signals row (rules.AGGREGATE_COLUMNS + partition).
AGGREGATES_SCHEMA: list[Column] = [
    Column("user_id", "STRING", required=True),
    Column("has_goal", "BOOL", required=True),
    Column("event_count", "INT64", required=True),
    Column("service_event_count", "INT64", required=True),
    Column("aligned_event_count", "INT64", required=True),
    Column("max_aligned_foreground_ms", "INT64", required=True),
    Column("max_app_sessions_week0", "INT64", required=True),
    *[Column(f"f{k}", "INT64", required=True) for k in range(10)],
    Column("has_tier1_event", "BOOL", required=True),
    Column("has_tier2_event", "BOOL", required=True),
    Column("as_of_date", "DATE", required=True),
    Column("computed_at", "TIMESTAMP", required=True),
]
AGGREGATES_PARTITION_BY = "as_of_date"
AGGREGATES_CLUSTER_BY = ("user_id",)

# The goal tables of one run, staged for the aggregation: kind 'user_goal' (key = user_id,
# sub_category_id of the goal or NULL, tier) and kind 'app' (key = package_name of a
# service app, sub_category_id or NULL for an app in no sub-category).
GOALS_BATCH_SCHEMA: list[Column] = [
    Column("kind", "STRING", required=True),
    Column("key", "STRING", required=True),
    Column("sub_category_id", "INT64"),
    Column("tier", "INT64"),
]


@dataclass(frozen=True)
class TableLayout:
    table: str
    schema: list[Column]
    partition_by: Optional[str] = None
    cluster_by: tuple[str, ...] = ()


LAYOUTS = (
    TableLayout(EVENTS_TABLE, EVENTS_SCHEMA, EVENTS_PARTITION_BY, EVENTS_CLUSTER_BY),
    TableLayout(REJECTS_TABLE, REJECTS_SCHEMA),
    TableLayout(CURSORS_TABLE, CURSORS_SCHEMA),
    TableLayout(AGGREGATES_TABLE, AGGREGATES_SCHEMA, AGGREGATES_PARTITION_BY, AGGREGATES_CLUSTER_BY),
)


def ensure_tables(warehouse, dataset: str) -> None:
    """Create the domain's warehouse tables when absent (and add any new column)."""
    for layout in LAYOUTS:
        warehouse.ensure_table(dataset, layout.table, layout.schema, layout.partition_by, layout.cluster_by)
