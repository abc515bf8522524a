    -- one row per session_id from PostHog's sessions export (the latest version of a
    -- session when the export holds several), with only the optional columns we carry.
    -- The export_cte fragment of sessions_merge.sql; its own fragments come from
    -- analytics_platform.posthog.store (validated column names only): export_columns,
    -- export_casts, export_order, and export_filter = filter_export_window.sql when the
    -- export has a start_timestamp column, else nothing.
    SELECT session_id {export_columns}
    FROM (
      SELECT
        session_id,
        {export_casts}
        ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY {export_order}) AS rn
      FROM `{posthog_dataset}.sessions`
      WHERE session_id IN (SELECT session_id FROM agg)
      {export_filter}
    )
    WHERE rn = 1
