-- Inputs of the milestone rules for one as_of_date: the stored signals of each user plus
-- has_tier{1,2}_event from the aggregates written with them (same transaction).
-- Parameters: :as_of_date (date), :all_users (boolean), :user_ids (text[]).
SELECT s.user_id,
       s.goal_setting_completed,
       s.customer_app_registration_completed,
       s.customer_app_login_completed,
       s.customer_app_engaged,
       s.customer_app_engagement_dropoff,
       s.customer_app_retained,
       s.customer_app_retained_dropoff,
       coalesce(a.has_tier1_event, false) AS has_tier1_event,
       coalesce(a.has_tier2_event, false) AS has_tier2_event,
       (a.user_id IS NOT NULL)            AS aggregates_found
FROM user_engagement_signals s
LEFT JOIN user_engagement_aggregates a ON a.user_id = s.user_id AND a.as_of_date = s.as_of_date
WHERE s.as_of_date = CAST(:as_of_date AS date)
  AND (:all_users OR s.user_id = ANY(:user_ids))
