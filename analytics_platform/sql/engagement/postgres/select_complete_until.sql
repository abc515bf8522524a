-- The end of the last extraction of a source that read every page (NULL: never).
-- :source text
SELECT complete_until FROM extraction_cursors WHERE source = :source
