-- Documents that are valid now leave the quarantine.
DELETE FROM `{dataset}.firestore_app_usage_event_rejects`
WHERE document_path IN UNNEST(@paths)
