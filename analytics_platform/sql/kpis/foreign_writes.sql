-- Rows of weekly_kpi written by something other than app_db/weekly_kpi since :low
-- (a row whose updated_at is the watermark of one of this asset's runs is its own write).
-- The own_writes_filter placeholder is own_writes_filter.sql when weekly_kpi_recalc_runs exists, else empty.
SELECT count(*)          AS n_rows,
       max(w.updated_at) AS max_updated_at
FROM weekly_kpi AS w
WHERE w.updated_at > :low
  {own_writes_filter}
