-- Documents that were valid before and are invalid now leave the mirror.
DELETE FROM `{dataset}.firestore_app_usage_events`
WHERE document_path IN UNNEST(@paths)
