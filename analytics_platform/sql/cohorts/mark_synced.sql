-- Record a successful Mixpanel marking for the users of @ids (one set-based UPDATE).
-- Identifiers: {cohort_dataset}.{cohort_table}.
UPDATE `{cohort_dataset}.{cohort_table}`
SET mixpanel_synced_at = @synced_at
WHERE mixpanel_synced_at IS NULL
  AND distinct_id IN (SELECT id FROM UNNEST(@ids) AS id)
