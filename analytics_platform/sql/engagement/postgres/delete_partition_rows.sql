-- Delete one as_of_date of an output table ({table}: a validated identifier); the
-- only_user_ids placeholder is only_user_ids.sql in ad-hoc user_ids mode, else empty.
-- :d date[, :ids text[]]
DELETE FROM {table} WHERE as_of_date = :d {only_user_ids}
