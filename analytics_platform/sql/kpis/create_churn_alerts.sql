-- Bookkeeping owned by analytics_platform: the learners listed in a delivered high-churn
-- summary, while their S stays above the threshold.  The summary goes out at most once per
-- UTC day (of as_of) and lists only learners not listed before; a learner whose S falls
-- back to the threshold or below is removed, so a later crossing is reported again.
CREATE TABLE IF NOT EXISTS weekly_kpi_churn_alerts (
    user_id     TEXT             PRIMARY KEY,
    alerted_on  DATE             NOT NULL,
    s           DOUBLE PRECISION NOT NULL,
    run_id      TEXT             NOT NULL,
    alerted_at  TIMESTAMPTZ      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS weekly_kpi_churn_alerts_alerted_on_idx
    ON weekly_kpi_churn_alerts (alerted_on);
