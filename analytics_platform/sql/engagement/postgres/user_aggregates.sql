-- Per-user aggregates for the signal and milestone rules (engagement/rules.py), as of T.
-- Set-based over every evaluated user at once (users with a goal or with an event before T),
-- one scan of the events (plus one of the last 7 days); no per-user query.
-- Parameters: :as_of (timestamptz T, exclusive), :b1 .. :b10 (timestamptz T - 7k days: week k
-- is [b(k+1), b(k)) with b0 = T, so an event exactly at T - 7 days is in week 0),
-- :all_users (boolean), :user_ids (text[]).
-- Alignment: an event is goal-aligned when its app's sub-categories overlap the sub-categories
-- of the user's goals (tier-k aligned: of the user's tier-k goals); arrays keep it one row per
-- event, so an app in two sub-categories is never counted twice.
-- `ev` is computed once per event behind an OFFSET 0 fence (PostgreSQL does not share common
-- sub-expressions: inlined, every FILTER would re-evaluate the array overlap; measured half the
-- CPU this way; sums are cast to BIGINT, NUMERIC would arrive as slow Decimals); the week-0 session count reads only week-0 events (index on event_timestamp).
WITH
user_subs AS NOT MATERIALIZED (
    SELECT ug.user_id,
           array_agg(DISTINCT CAST(g.sub_category_id AS text)) AS subs,
           array_agg(DISTINCT CAST(g.sub_category_id AS text)) FILTER (WHERE ug.tier = 1) AS tier1_subs,
           array_agg(DISTINCT CAST(g.sub_category_id AS text)) FILTER (WHERE ug.tier = 2) AS tier2_subs
    FROM user_goals ug
    JOIN goals g ON g.id = ug.goal_id
    WHERE :all_users OR ug.user_id = ANY(:user_ids)
    GROUP BY ug.user_id
),
app_subs AS NOT MATERIALIZED (
    SELECT a.package_name,
           array_agg(CAST(agsc.sub_category_id AS text)) FILTER (WHERE agsc.sub_category_id IS NOT NULL) AS subs
    FROM apps a
    LEFT JOIN app_goal_sub_categories agsc ON agsc.app_id = a.id
    GROUP BY a.package_name
),
ev AS NOT MATERIALIZED (
    SELECT e.user_id, e.app_id, e.session_id, e.foreground_time_ms AS fg, e.event_timestamp AS ts,
           (s.package_name IS NOT NULL)            AS is_service,
           coalesce(us.subs && s.subs, false)       AS aligned,
           coalesce(us.tier1_subs && s.subs, false) AS tier1,
           coalesce(us.tier2_subs && s.subs, false) AS tier2
    FROM firestore_app_usage_events e
    LEFT JOIN app_subs s ON s.package_name = e.app_id
    LEFT JOIN user_subs us ON us.user_id = e.user_id
    WHERE e.event_timestamp < CAST(:as_of AS timestamptz)
      AND (:all_users OR e.user_id = ANY(:user_ids))
    OFFSET 0  -- fence: each event's expressions are computed once, not once per reference
),
per_user AS NOT MATERIALIZED (
    SELECT user_id,
           count(*)                                       AS event_count,
           count(*) FILTER (WHERE is_service)             AS service_event_count,
           count(*) FILTER (WHERE aligned)                AS aligned_event_count,
           coalesce(max(fg) FILTER (WHERE aligned), 0)    AS max_aligned_foreground_ms,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b1), 0) AS bigint) AS f0,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b2 AND ts < :b1), 0) AS bigint) AS f1,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b3 AND ts < :b2), 0) AS bigint) AS f2,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b4 AND ts < :b3), 0) AS bigint) AS f3,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b5 AND ts < :b4), 0) AS bigint) AS f4,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b6 AND ts < :b5), 0) AS bigint) AS f5,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b7 AND ts < :b6), 0) AS bigint) AS f6,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b8 AND ts < :b7), 0) AS bigint) AS f7,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b9 AND ts < :b8), 0) AS bigint) AS f8,
           CAST(coalesce(sum(fg) FILTER (WHERE aligned AND ts >= :b10 AND ts < :b9), 0) AS bigint) AS f9,
           bool_or(tier1)                                 AS has_tier1_event,
           bool_or(tier2)                                 AS has_tier2_event
    FROM ev
    GROUP BY user_id
),
week0_sessions AS NOT MATERIALIZED (
    SELECT user_id, max(sessions) AS max_app_sessions_week0
    FROM (
        SELECT e.user_id, e.app_id, count(DISTINCT e.session_id) AS sessions
        FROM firestore_app_usage_events e
        JOIN app_subs s ON s.package_name = e.app_id
        JOIN user_subs us ON us.user_id = e.user_id
        WHERE e.event_timestamp >= :b1 AND e.event_timestamp < CAST(:as_of AS timestamptz)
          AND (:all_users OR e.user_id = ANY(:user_ids))
          AND us.subs && s.subs
        GROUP BY e.user_id, e.app_id
    ) per_app
    GROUP BY user_id
),
goal_users AS NOT MATERIALIZED (
    SELECT DISTINCT ug.user_id FROM user_goals ug WHERE :all_users OR ug.user_id = ANY(:user_ids)
)
SELECT coalesce(p.user_id, g.user_id)             AS user_id,
       (g.user_id IS NOT NULL)                    AS has_goal,
       coalesce(p.event_count, 0)                 AS event_count,
       coalesce(p.service_event_count, 0)         AS service_event_count,
       coalesce(p.aligned_event_count, 0)         AS aligned_event_count,
       coalesce(p.max_aligned_foreground_ms, 0)   AS max_aligned_foreground_ms,
       coalesce(w.max_app_sessions_week0, 0)      AS max_app_sessions_week0,
       coalesce(p.f0, 0) AS f0, coalesce(p.f1, 0) AS f1, coalesce(p.f2, 0) AS f2,
       coalesce(p.f3, 0) AS f3, coalesce(p.f4, 0) AS f4, coalesce(p.f5, 0) AS f5,
       coalesce(p.f6, 0) AS f6, coalesce(p.f7, 0) AS f7, coalesce(p.f8, 0) AS f8,
       coalesce(p.f9, 0) AS f9,
       coalesce(p.has_tier1_event, false)         AS has_tier1_event,
       coalesce(p.has_tier2_event, false)         AS has_tier2_event
FROM per_user p
FULL JOIN goal_users g ON g.user_id = p.user_id
LEFT JOIN week0_sessions w ON w.user_id = coalesce(p.user_id, g.user_id)
