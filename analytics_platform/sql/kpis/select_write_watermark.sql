-- The updated_at value a run stamps on every weekly_kpi row it writes (its watermark):
-- the wall clock inside the transaction, not its start (now() would be the same for
-- every statement of a long transaction).
SELECT clock_timestamp()
