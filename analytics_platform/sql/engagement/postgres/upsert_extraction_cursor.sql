-- Store an extraction source's cursor and add the documents read to its running total.
-- :source text, :ts timestamptz, :path text, :n bigint, :now timestamptz
INSERT INTO extraction_cursors AS c
    (source, cursor_timestamp, cursor_document_path, documents_read_total, updated_at)
VALUES (:source, :ts, :path, :n, :now)
ON CONFLICT (source) DO UPDATE SET
    cursor_timestamp = EXCLUDED.cursor_timestamp,
    cursor_document_path = EXCLUDED.cursor_document_path,
    documents_read_total = c.documents_read_total + EXCLUDED.documents_read_total,
    updated_at = EXCLUDED.updated_at
