-- The stored signals of one as_of_date (the milestones' input; only :user_ids' unless :all_users).
-- :as_of_date date, :all_users boolean, :user_ids text[]
SELECT user_id,
       goal_setting_completed,
       customer_app_registration_completed,
       customer_app_login_completed,
       customer_app_engaged,
       customer_app_engagement_dropoff,
       customer_app_retained,
       customer_app_retained_dropoff
FROM user_engagement_signals
WHERE as_of_date = CAST(:as_of_date AS date)
  AND (:all_users OR user_id = ANY(:user_ids))
