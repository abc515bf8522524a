-- The mirror's rows of the documents of one extraction batch (to tell inserted, updated and
-- unchanged rows apart, and to find rows of documents that became invalid).
SELECT document_path, user_id, event_id, app_id, foreground_time_ms, session_id, event_timestamp
FROM `{dataset}.firestore_app_usage_events`
WHERE document_path IN UNNEST(@paths)
