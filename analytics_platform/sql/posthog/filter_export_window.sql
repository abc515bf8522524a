-- Optional export_filter fragment of sessions_export_cte.sql: prune PostHog's sessions
-- export to the run's read window (a session starts within it).
AND `{start_column}` >= @read_start AND `{start_column}` < @read_end
