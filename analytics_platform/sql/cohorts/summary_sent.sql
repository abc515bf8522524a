-- Whether the active-yesterday Slack summary for @day was already delivered.
-- Identifiers: {cohort_dataset}.{audit_table}.
SELECT COUNT(*) AS sent
FROM `{cohort_dataset}.{audit_table}`
WHERE process_name = @process_name
  AND step = @step
  AND status = 'sent'
  AND JSON_VALUE(details, '$.day') = @day
