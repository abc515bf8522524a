-- Delete the users of @ids from the cohort table (remove_active, after they were recorded
-- in the removed table and their Mixpanel marker was unset).
-- Identifiers: {cohort_dataset}.{cohort_table}.
DELETE FROM `{cohort_dataset}.{cohort_table}`
WHERE distinct_id IN (SELECT id FROM UNNEST(@ids) AS id)
