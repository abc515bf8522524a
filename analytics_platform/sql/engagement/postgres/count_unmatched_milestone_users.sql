-- (milestone rows without a signals row, signals rows without a milestone row) of one as_of_date.
-- :d date
SELECT
  (SELECT count(*) FROM user_milestones m WHERE m.as_of_date = :d AND NOT EXISTS
     (SELECT 1 FROM user_engagement_signals s WHERE s.as_of_date = :d AND s.user_id = m.user_id)),
  (SELECT count(*) FROM user_engagement_signals s WHERE s.as_of_date = :d AND NOT EXISTS
     (SELECT 1 FROM user_milestones m WHERE m.as_of_date = :d AND m.user_id = s.user_id))
