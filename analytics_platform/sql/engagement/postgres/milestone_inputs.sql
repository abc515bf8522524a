-- Inputs of the milestone rules for one as_of_date: the stored signals of each evaluated
-- user plus has_tier{1,2}_event (at least one tier-k aligned event before T).
-- Parameters: :as_of (timestamptz, T), :as_of_date (date), :all_users, :user_ids (text[]).
WITH
aligned_apps AS (
    SELECT ug.user_id,
           a.package_name,
           bool_or(ug.tier = 1) AS tier1,
           bool_or(ug.tier = 2) AS tier2
    FROM user_goals ug
    JOIN goals g ON g.id = ug.goal_id
    JOIN app_goal_sub_categories agsc ON agsc.sub_category_id = g.sub_category_id
    JOIN apps a ON a.id = agsc.app_id
    WHERE :all_users OR ug.user_id = ANY(:user_ids)
    GROUP BY ug.user_id, a.package_name
),
tiers AS (
    SELECT e.user_id,
           bool_or(aa.tier1) AS has_tier1_event,
           bool_or(aa.tier2) AS has_tier2_event
    FROM firestore_app_usage_events e
    JOIN aligned_apps aa ON aa.user_id = e.user_id AND aa.package_name = e.app_id
    WHERE e.event_timestamp < CAST(:as_of AS timestamptz)
      AND (:all_users OR e.user_id = ANY(:user_ids))
    GROUP BY e.user_id
)
SELECT s.user_id,
       s.goal_setting_completed,
       s.customer_app_registration_completed,
       s.customer_app_login_completed,
       s.customer_app_engaged,
       s.customer_app_engagement_dropoff,
       s.customer_app_retained,
       s.customer_app_retained_dropoff,
       coalesce(t.has_tier1_event, false) AS has_tier1_event,
       coalesce(t.has_tier2_event, false) AS has_tier2_event
FROM user_engagement_signals s
LEFT JOIN tiers t ON t.user_id = s.user_id
WHERE s.as_of_date = CAST(:as_of_date AS date)
  AND (:all_users OR s.user_id = ANY(:user_ids))
