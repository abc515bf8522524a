-- Upsert one page of rejected documents (quarantine) by document path.
-- Run with psycopg2.extras.execute_values: its VALUES placeholder is psycopg2's, the rows are
-- (document_path, user_id, event_id, reasons, raw_fields, event_timestamp, first_seen_at, last_seen_at).
INSERT INTO firestore_app_usage_event_rejects AS r
    (document_path, user_id, event_id, reasons, raw_fields, event_timestamp, first_seen_at, last_seen_at)
VALUES %s
ON CONFLICT (document_path) DO UPDATE SET
    user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id, reasons = EXCLUDED.reasons,
    raw_fields = EXCLUDED.raw_fields, event_timestamp = EXCLUDED.event_timestamp,
    last_seen_at = EXCLUDED.last_seen_at
