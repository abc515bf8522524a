-- Size and key health of the temp users table.
-- Identifiers: {cohort_dataset}.{cohort_table}.
SELECT
  COUNT(*) AS row_count,
  COUNTIF(mixpanel_synced_at IS NULL) AS unsynced,
  COUNT(*) - COUNT(DISTINCT distinct_id) AS duplicate_rows,
  COUNTIF(distinct_id IS NULL OR distinct_id = '') AS empty_ids
FROM `{cohort_dataset}.{cohort_table}`
