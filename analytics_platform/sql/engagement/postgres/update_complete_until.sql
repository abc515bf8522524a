-- Record that every document of a source with a timestamp before :until was read; never
-- moves back. A source read for the first time with no document at all gets a row without
-- a position (empty cursor_document_path: read_cursor treats it as "no cursor").
-- :source text, :until timestamptz
INSERT INTO extraction_cursors AS c
    (source, cursor_timestamp, cursor_document_path, documents_read_total, updated_at, complete_until)
VALUES (:source, CAST(:until AS timestamptz), '', 0, CAST(:until AS timestamptz), CAST(:until AS timestamptz))
ON CONFLICT (source) DO UPDATE SET
    complete_until = GREATEST(coalesce(c.complete_until, EXCLUDED.complete_until), EXCLUDED.complete_until),
    updated_at = EXCLUDED.updated_at
