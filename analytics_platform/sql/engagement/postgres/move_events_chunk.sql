-- One-off move (engagement/move_mirror.py): the next chunk of the OLD PostgreSQL mirror,
-- in document_path order after :after.
-- :after text, :n integer
SELECT document_path, user_id, event_id, app_id, foreground_time_ms, session_id,
       event_timestamp, extracted_at
FROM firestore_app_usage_events
WHERE document_path > :after
ORDER BY document_path
LIMIT :n
