  AND NOT EXISTS (
      SELECT 1 FROM weekly_kpi_recalc_runs AS r WHERE r.written_at = w.updated_at
  )
