-- Documents that are valid now leave the quarantine.
-- :paths text[]
DELETE FROM firestore_app_usage_event_rejects WHERE document_path = ANY(:paths)
