-- The database clock: one clock for every process and pod.
SELECT clock_timestamp() AS now
