"""Table names and schemas of the cohorts domain (contract: specs/temp_users.md)."""

from __future__ import annotations

from analytics_platform.resources.warehouse import Column

TEMP_USERS_TABLE = "state_loss_temp_users"
REMOVED_TABLE = "state_loss_temp_users_removed"
AUDIT_TABLE = "process_audit_log"

TEMP_USERS_SCHEMA = (
    Column("distinct_id", "STRING", required=True),
    Column("device_id", "STRING"),
    Column("privacy_event_at", "TIMESTAMP"),
    Column("restore_event_at", "TIMESTAMP"),
    Column("detected_at", "TIMESTAMP"),
    Column("mixpanel_synced_at", "TIMESTAMP"),
)

# Users taken out of the cohort by ``remove_active``: detection never re-inserts them.
REMOVED_SCHEMA = (
    Column("distinct_id", "STRING", required=True),
    Column("device_id", "STRING"),
    Column("privacy_event_at", "TIMESTAMP"),
    Column("restore_event_at", "TIMESTAMP"),
    Column("detected_at", "TIMESTAMP"),
    Column("last_active_at", "TIMESTAMP"),
    Column("removed_at", "TIMESTAMP"),
    Column("run_id", "STRING"),
)

AUDIT_SCHEMA = (
    Column("process_name", "STRING", required=True),
    Column("run_id", "STRING"),
    Column("step", "STRING"),
    Column("status", "STRING"),
    Column("logged_at", "TIMESTAMP"),
    Column("details", "JSON"),
)
