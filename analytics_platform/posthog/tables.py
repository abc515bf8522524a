"""Table schemas of the posthog domain: the output tables and the source tables' shapes.

The source schemas describe PostHog's BigQuery batch export and Firebase's export as this
platform reads them; the demo and the tests create local tables with them.  Firebase's
``event_params`` (a REPEATED RECORD) has no column type here: the aggregation never reads
it, and tests that want it create it with DDL.
"""

from __future__ import annotations

from analytics_platform.posthog.rules import SESSION_COLUMNS, CarryPlan
from analytics_platform.resources.warehouse import Column

SESSIONS_TABLE = "sessions"
PERSONS_TABLE = "persons"
PERSONS_EXPORT_TABLE = "persons"  # PostHog's persons export, in POSTHOG_DATASET_ID
EVENTS_TABLE = "events"
USERS_TABLE = "users"

_REQUIRED = {"session_id", "session_date"}


def sessions_schema(plan: CarryPlan) -> list[Column]:
    """Output schema of posthog_aggregated.sessions for a run (carried columns last)."""
    cols = [Column(name, typ, required=name in _REQUIRED) for name, typ in SESSION_COLUMNS]
    cols += [Column(name, typ) for name, typ in plan.columns]
    return cols


PERSONS_SCHEMA: list[Column] = [
    Column("distinct_id", "STRING", required=True),
    Column("firebase_user_id", "STRING"),
    Column("first_session_at", "TIMESTAMP"),
    Column("last_session_at", "TIMESTAMP"),
    Column("session_count", "INT64"),
    Column("total_duration_seconds", "FLOAT64"),
    Column("avg_session_duration_seconds", "FLOAT64"),
    Column("events_created_count", "INT64"),
    Column("quiz_completed_count", "INT64"),
    Column("active_days", "INT64"),
    Column("_loaded_at", "TIMESTAMP"),
    # PostHog's person (persons export); NULL when the row is keyed by distinct_id alone
    Column("person_id", "STRING"),
    Column("distinct_id_count", "INT64"),
]

# --- sources (external; created here only by the demo and the tests) -------------------
POSTHOG_EVENTS_SCHEMA: list[Column] = [
    Column("uuid", "STRING"),
    Column("event", "STRING"),
    Column("properties", "JSON"),
    Column("distinct_id", "STRING"),
    Column("team_id", "INT64"),
    Column("timestamp", "TIMESTAMP"),
    Column("elements", "STRING"),
    Column("set", "JSON"),
    Column("set_once", "JSON"),
    Column("ip", "STRING"),
    Column("site_url", "STRING"),
    Column("bq_ingested_timestamp", "TIMESTAMP"),
]

POSTHOG_SESSIONS_SCHEMA: list[Column] = [
    Column("session_id", "STRING"),
    Column("distinct_id", "STRING"),
    Column("start_timestamp", "TIMESTAMP"),
    Column("end_timestamp", "TIMESTAMP"),
    Column("session_duration", "INT64"),
    Column("pageview_count", "INT64"),
    Column("screen_count", "INT64"),
    Column("autocapture_count", "INT64"),
    Column("entry_current_url", "STRING"),
    Column("end_current_url", "STRING"),
    Column("is_bounce", "BOOL"),
    Column("channel_type", "STRING"),
    Column("entry_utm_source", "STRING"),
    Column("entry_utm_medium", "STRING"),
    Column("entry_utm_campaign", "STRING"),
]

# PostHog's persons batch-export model (columns used: distinct_id, person_id and, when
# present, person_distinct_id_version / person_version / _inserted_at to pick the latest
# mapping of a distinct_id).
POSTHOG_PERSONS_SCHEMA: list[Column] = [
    Column("team_id", "INT64"),
    Column("distinct_id", "STRING"),
    Column("person_id", "STRING"),
    Column("properties", "JSON"),
    Column("person_version", "INT64"),
    Column("person_distinct_id_version", "INT64"),
    Column("created_at", "TIMESTAMP"),
    Column("_inserted_at", "TIMESTAMP"),
]

FIREBASE_USERS_SCHEMA: list[Column] = [
    Column("user_id", "STRING"),
    Column("created_at", "TIMESTAMP"),
    Column("platform", "STRING"),
    Column("country", "STRING"),
    Column("properties", "JSON"),
]

FIREBASE_EVENTS_SCHEMA: list[Column] = [
    Column("event_date", "STRING"),
    Column("event_timestamp", "INT64"),
    Column("event_name", "STRING"),
    Column("user_id", "STRING"),
    Column("user_pseudo_id", "STRING"),
    Column("platform", "STRING"),
]

# BigQuery DDL for Firebase's event_params (REPEATED RECORD), for tests and docs.
FIREBASE_EVENT_PARAMS_DDL = (
    "ARRAY<STRUCT<key STRING, value STRUCT<string_value STRING, int_value INT64, "
    "float_value FLOAT64, double_value FLOAT64>>>"
)
