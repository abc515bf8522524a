    -- The export_cte fragment of sessions_merge.sql when PostHog's sessions export is
    -- absent or carries nothing: no row, so every carried column is NULL.
    SELECT session_id FROM agg WHERE FALSE
