-- A document that was valid before and is invalid now leaves the events table.
-- :paths text[]
DELETE FROM firestore_app_usage_events WHERE document_path = ANY(:paths)
