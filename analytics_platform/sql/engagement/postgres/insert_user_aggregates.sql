-- Insert the aggregates of user_aggregates.sql (formatted in as the user_aggregates
-- fragment) into user_engagement_aggregates, stamped with the partition and computed_at.
-- The columns are rules.AGGREGATE_COLUMNS, then as_of_date and computed_at.
-- :as_of_date date, :computed_at timestamptz (and the parameters of user_aggregates.sql)
INSERT INTO user_engagement_aggregates (
    user_id, has_goal, event_count, service_event_count, aligned_event_count,
    max_aligned_foreground_ms, max_app_sessions_week0,
    f0, f1, f2, f3, f4, f5, f6, f7, f8, f9,
    has_tier1_event, has_tier2_event, as_of_date, computed_at
)
SELECT q.*, CAST(:as_of_date AS date), CAST(:computed_at AS timestamptz)
FROM (
{user_aggregates}
) AS q
