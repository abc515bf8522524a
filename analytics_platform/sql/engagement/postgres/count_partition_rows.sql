-- Rows, distinct users and empty user ids of one as_of_date of an output table
-- ({table}: a validated identifier).
-- :d date
SELECT count(*), count(DISTINCT user_id),
       count(*) FILTER (WHERE user_id IS NULL OR user_id = '')
FROM {table} WHERE as_of_date = :d
