-- Tables owned by the engagement domain (PostgreSQL, application database).
-- Idempotent: run before every materialization; an advisory lock serialises concurrent runs.
SELECT pg_advisory_xact_lock(hashtext('analytics_platform.engagement.schema'));

-- Extracted Firestore event documents: one row per document path (upserted).
CREATE TABLE IF NOT EXISTS firestore_app_usage_events (
    document_path       TEXT        PRIMARY KEY,  -- app_usage_events/{userId}/events/{eventId}
    user_id             TEXT        NOT NULL,
    event_id            TEXT        NOT NULL,
    app_id              TEXT        NOT NULL,
    foreground_time_ms  BIGINT      NOT NULL CHECK (foreground_time_ms >= 0),
    session_id          TEXT        NOT NULL,
    event_timestamp     TIMESTAMPTZ NOT NULL,
    extracted_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS firestore_app_usage_events_user_ts
    ON firestore_app_usage_events (user_id, event_timestamp);
CREATE INDEX IF NOT EXISTS firestore_app_usage_events_ts
    ON firestore_app_usage_events (event_timestamp);

-- Documents that failed validation, with the reasons (quarantine; upserted by path).
CREATE TABLE IF NOT EXISTS firestore_app_usage_event_rejects (
    document_path    TEXT        PRIMARY KEY,
    user_id          TEXT,
    event_id         TEXT,
    reasons          TEXT        NOT NULL,
    raw_fields       JSONB,
    event_timestamp  TIMESTAMPTZ,
    first_seen_at    TIMESTAMPTZ NOT NULL,
    last_seen_at     TIMESTAMPTZ NOT NULL
);

-- Position of incremental extractions, written in the same transaction as the data.
CREATE TABLE IF NOT EXISTS extraction_cursors (
    source                 TEXT        PRIMARY KEY,
    cursor_timestamp       TIMESTAMPTZ NOT NULL,
    cursor_document_path   TEXT        NOT NULL,
    documents_read_total   BIGINT      NOT NULL DEFAULT 0,
    updated_at             TIMESTAMPTZ NOT NULL,
    complete_until         TIMESTAMPTZ  -- end of the last extraction that read every page
);
ALTER TABLE extraction_cursors ADD COLUMN IF NOT EXISTS complete_until TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS user_engagement_signals (
    user_id                              TEXT        NOT NULL,
    as_of_date                           DATE        NOT NULL,
    goal_setting_completed               BOOLEAN     NOT NULL,
    customer_app_registration_completed  BOOLEAN     NOT NULL,
    customer_app_login_completed         BOOLEAN     NOT NULL,
    customer_app_engaged                 BOOLEAN     NOT NULL,
    customer_app_engagement_dropoff      BOOLEAN     NOT NULL,
    customer_app_retained                BOOLEAN     NOT NULL,
    customer_app_retained_dropoff        BOOLEAN     NOT NULL,
    event_count                          BIGINT      NOT NULL,
    service_event_count                  BIGINT      NOT NULL,
    aligned_event_count                  BIGINT      NOT NULL,
    computed_at                          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, as_of_date)
);

-- The per-user aggregates behind each signals row (written with it, in the same transaction):
-- explain a flag, and give the milestones their tier flags without a second scan of the events.
CREATE TABLE IF NOT EXISTS user_engagement_aggregates (
    user_id                    TEXT        NOT NULL,
    as_of_date                 DATE        NOT NULL,
    has_goal                   BOOLEAN     NOT NULL,
    event_count                BIGINT      NOT NULL,
    service_event_count        BIGINT      NOT NULL,
    aligned_event_count        BIGINT      NOT NULL,
    max_aligned_foreground_ms  BIGINT      NOT NULL,
    max_app_sessions_week0     BIGINT      NOT NULL,
    f0 BIGINT NOT NULL, f1 BIGINT NOT NULL, f2 BIGINT NOT NULL, f3 BIGINT NOT NULL, f4 BIGINT NOT NULL,
    f5 BIGINT NOT NULL, f6 BIGINT NOT NULL, f7 BIGINT NOT NULL, f8 BIGINT NOT NULL, f9 BIGINT NOT NULL,
    has_tier1_event            BOOLEAN     NOT NULL,
    has_tier2_event            BOOLEAN     NOT NULL,
    computed_at                TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, as_of_date)
);

CREATE TABLE IF NOT EXISTS user_milestones (
    user_id                        TEXT        NOT NULL,
    as_of_date                     DATE        NOT NULL,
    goal_setting_complete          BOOLEAN     NOT NULL,
    tier1_app_registered           BOOLEAN     NOT NULL,
    tier1_app_engaged              BOOLEAN     NOT NULL,
    tier1_app_engagement_dropoff   BOOLEAN     NOT NULL,
    tier1_app_retained             BOOLEAN     NOT NULL,
    tier1_app_retention_dropoff    BOOLEAN     NOT NULL,
    tier2_app_registered           BOOLEAN     NOT NULL,
    tier2_app_engaged              BOOLEAN     NOT NULL,
    tier2_app_engagement_dropoff   BOOLEAN     NOT NULL,
    tier2_app_retained             BOOLEAN     NOT NULL,
    tier2_app_retention_dropoff    BOOLEAN     NOT NULL,
    computed_at                    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, as_of_date)
);
