-- One-off move: the OLD PostgreSQL quarantine (small), raw_fields as JSON text.
SELECT document_path, user_id, event_id, reasons, CAST(raw_fields AS text) AS raw_fields,
       event_timestamp, first_seen_at, last_seen_at
FROM firestore_app_usage_event_rejects
