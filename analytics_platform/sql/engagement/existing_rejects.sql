-- The quarantined documents among the paths of one extraction batch.
SELECT document_path
FROM `{dataset}.firestore_app_usage_event_rejects`
WHERE document_path IN UNNEST(@paths)
