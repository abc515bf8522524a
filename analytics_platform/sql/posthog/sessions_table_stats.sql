-- Table-wide uniqueness of posthog_aggregated.sessions (asset check): a session_id must
-- appear once in the whole table, not only once per session_date partition.
SELECT
  COUNT(*) AS session_rows,
  COUNT(*) - COUNT(DISTINCT session_id) AS duplicate_session_ids
FROM `{out_dataset}.sessions`
