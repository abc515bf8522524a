-- The stored position of one extraction source (Firestore order: timestamp, document path).
-- The lock_selected_rows placeholder is lock_selected_rows.sql when the caller is about to
-- move the cursor (serialises concurrent extractions), else empty.
-- :source text
SELECT cursor_timestamp, cursor_document_path
FROM extraction_cursors
WHERE source = :source {lock_selected_rows}
