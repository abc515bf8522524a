-- The optional session table (demo and tests only; see create_source_tables.sql).
CREATE TABLE IF NOT EXISTS session (
    user_id  TEXT,
    ended_at TIMESTAMPTZ
);
