-- Temp users not yet marked in Mixpanel, in a stable order.
-- Identifiers: {cohort_dataset}.{cohort_table}.
SELECT distinct_id
FROM `{cohort_dataset}.{cohort_table}`
WHERE mixpanel_synced_at IS NULL
ORDER BY distinct_id
