-- Per-user aggregates for the signal and milestone rules (engagement/rules.py), as of :as_of.
-- Set-based over every evaluated user at once: users with a goal or with an event before T.
-- Parameters: :as_of (timestamptz, T, exclusive), :all_users (boolean), :user_ids (text[]).
-- Week k = [T - 7(k+1) days, T - 7k days) = (microseconds(T - ts) - 1) div 604800000000.
WITH
selected_goals AS (
    SELECT ug.user_id, ug.tier, g.sub_category_id
    FROM user_goals ug
    JOIN goals g ON g.id = ug.goal_id
    WHERE :all_users OR ug.user_id = ANY(:user_ids)
),
aligned_apps AS (            -- (user, service app package) pairs aligned with a selected goal
    SELECT sg.user_id,
           a.package_name,
           bool_or(sg.tier = 1) AS tier1,
           bool_or(sg.tier = 2) AS tier2
    FROM selected_goals sg
    JOIN app_goal_sub_categories agsc ON agsc.sub_category_id = sg.sub_category_id
    JOIN apps a ON a.id = agsc.app_id
    GROUP BY sg.user_id, a.package_name
),
events AS (
    SELECT e.user_id,
           e.app_id,
           e.foreground_time_ms,
           e.session_id,
           ((EXTRACT(EPOCH FROM (CAST(:as_of AS timestamptz) - e.event_timestamp)) * 1000000)::bigint - 1)
               / 604800000000 AS week
    FROM firestore_app_usage_events e
    WHERE e.event_timestamp < CAST(:as_of AS timestamptz)
      AND (:all_users OR e.user_id = ANY(:user_ids))
),
event_counts AS (
    SELECT ev.user_id,
           count(*)              AS event_count,
           count(s.package_name) AS service_event_count
    FROM events ev
    LEFT JOIN apps s ON s.package_name = ev.app_id
    GROUP BY ev.user_id
),
aligned_events AS MATERIALIZED (
    SELECT ev.user_id, ev.app_id, ev.foreground_time_ms, ev.session_id, ev.week, aa.tier1, aa.tier2
    FROM events ev
    JOIN aligned_apps aa ON aa.user_id = ev.user_id AND aa.package_name = ev.app_id
),
aligned_per_user AS (
    SELECT user_id,
           count(*)                                            AS aligned_event_count,
           max(foreground_time_ms)                             AS max_aligned_foreground_ms,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 0), 0) AS f0,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 1), 0) AS f1,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 2), 0) AS f2,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 3), 0) AS f3,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 4), 0) AS f4,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 5), 0) AS f5,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 6), 0) AS f6,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 7), 0) AS f7,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 8), 0) AS f8,
           coalesce(sum(foreground_time_ms) FILTER (WHERE week = 9), 0) AS f9,
           bool_or(tier1)                                      AS has_tier1_event,
           bool_or(tier2)                                      AS has_tier2_event
    FROM aligned_events
    GROUP BY user_id
),
week0_app_sessions AS (      -- per user: max over aligned apps of distinct week-0 sessions
    SELECT user_id, max(sessions) AS max_app_sessions_week0
    FROM (
        SELECT user_id, app_id, count(*) AS sessions
        FROM (SELECT DISTINCT user_id, app_id, session_id FROM aligned_events WHERE week = 0) d
        GROUP BY user_id, app_id
    ) per_app
    GROUP BY user_id
),
goal_users AS (
    SELECT DISTINCT user_id FROM selected_goals
),
evaluated AS (
    SELECT user_id FROM goal_users
    UNION
    SELECT user_id FROM event_counts
)
SELECT u.user_id,
       (g.user_id IS NOT NULL)                      AS has_goal,
       coalesce(c.event_count, 0)                   AS event_count,
       coalesce(c.service_event_count, 0)           AS service_event_count,
       coalesce(a.aligned_event_count, 0)           AS aligned_event_count,
       coalesce(a.max_aligned_foreground_ms, 0)     AS max_aligned_foreground_ms,
       coalesce(w.max_app_sessions_week0, 0)        AS max_app_sessions_week0,
       coalesce(a.f0, 0) AS f0, coalesce(a.f1, 0) AS f1, coalesce(a.f2, 0) AS f2,
       coalesce(a.f3, 0) AS f3, coalesce(a.f4, 0) AS f4, coalesce(a.f5, 0) AS f5,
       coalesce(a.f6, 0) AS f6, coalesce(a.f7, 0) AS f7, coalesce(a.f8, 0) AS f8,
       coalesce(a.f9, 0) AS f9,
       coalesce(a.has_tier1_event, false)           AS has_tier1_event,
       coalesce(a.has_tier2_event, false)           AS has_tier2_event
FROM evaluated u
LEFT JOIN goal_users g ON g.user_id = u.user_id
LEFT JOIN event_counts c ON c.user_id = u.user_id
LEFT JOIN aligned_per_user a ON a.user_id = u.user_id
LEFT JOIN week0_app_sessions w ON w.user_id = u.user_id
