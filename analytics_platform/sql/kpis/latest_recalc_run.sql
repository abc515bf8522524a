-- The most recent (non-dry) run of app_db/weekly_kpi, from its bookkeeping table.
SELECT run_id, written_at, as_of, week_start, threshold_days, processed, failed, inserted, updated
FROM weekly_kpi_recalc_runs
ORDER BY written_at DESC
LIMIT 1
