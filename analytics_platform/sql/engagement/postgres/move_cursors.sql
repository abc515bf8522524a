-- One-off move: the OLD PostgreSQL extraction cursors.
SELECT source, cursor_timestamp, cursor_document_path, documents_read_total, updated_at
FROM extraction_cursors
