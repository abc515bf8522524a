-- Upsert one page of valid extracted events by document path; a row is rewritten only when
-- something changed, and RETURNING tells inserted from updated (unchanged rows return nothing).
-- Run with psycopg2.extras.execute_values: its VALUES placeholder is psycopg2's, the rows are
-- (document_path, user_id, event_id, app_id, foreground_time_ms, session_id, event_timestamp, extracted_at).
INSERT INTO firestore_app_usage_events AS t
    (document_path, user_id, event_id, app_id, foreground_time_ms, session_id, event_timestamp, extracted_at)
VALUES %s
ON CONFLICT (document_path) DO UPDATE SET
    user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id, app_id = EXCLUDED.app_id,
    foreground_time_ms = EXCLUDED.foreground_time_ms, session_id = EXCLUDED.session_id,
    event_timestamp = EXCLUDED.event_timestamp, extracted_at = EXCLUDED.extracted_at
WHERE (t.user_id, t.event_id, t.app_id, t.foreground_time_ms, t.session_id, t.event_timestamp)
      IS DISTINCT FROM
      (EXCLUDED.user_id, EXCLUDED.event_id, EXCLUDED.app_id, EXCLUDED.foreground_time_ms,
       EXCLUDED.session_id, EXCLUDED.event_timestamp)
RETURNING (xmax = 0) AS inserted
