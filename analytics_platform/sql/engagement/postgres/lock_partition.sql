-- Serialise the writers of one partition of an output table until the end of the
-- transaction (two runs of the same day: the later one replaces the earlier one's rows
-- instead of colliding on the primary key). Needs no privilege.
-- :key text
SELECT pg_advisory_xact_lock(hashtext(:key))
