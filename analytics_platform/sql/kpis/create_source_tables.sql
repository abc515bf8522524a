-- The application's source tables, as specs/inactivity_kpi.md describes them.  Used ONLY by
-- the demo and the tests to build a local application database (in production these
-- tables exist and belong to the application).  `attempt` is a VIEW over a log table.
CREATE TABLE IF NOT EXISTS exam_results (
    id         BIGSERIAL PRIMARY KEY,
    user_id    TEXT,
    score      DOUBLE PRECISION,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS exam_results_user_id_idx ON exam_results (user_id);
CREATE TABLE IF NOT EXISTS features_topic_daily (
    user_id      TEXT,
    topic_id     TEXT,
    day          DATE,
    last_seen_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS attempt_log (
    id           BIGSERIAL PRIMARY KEY,
    student_id   TEXT,
    item_id      TEXT,
    completed_at TIMESTAMPTZ
);
CREATE OR REPLACE VIEW attempt AS
    SELECT id, student_id, item_id, completed_at FROM attempt_log;
CREATE TABLE IF NOT EXISTS interest_goal (
    user_id      TEXT,
    target_score DOUBLE PRECISION
);
