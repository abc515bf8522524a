-- properties_json fragment when {posthog_dataset}.events.properties is a STRING holding JSON:
-- parsed, NULL (never an error) when the text is not valid JSON - such an event is counted
-- (sessions_event_stats.sql) and kept out of the sessions.
SAFE.PARSE_JSON(properties)
