-- The stored position of one extraction source (Firestore order: timestamp, document path)
-- and the end of its last complete read.
SELECT cursor_timestamp, cursor_document_path, documents_read_total, complete_until
FROM `{dataset}.extraction_cursors`
WHERE source = @source
