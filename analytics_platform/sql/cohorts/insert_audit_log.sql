-- One row of the process audit log (continuity with the old service's dashboards).
-- Identifiers: {cohort_dataset}.{audit_table}.
INSERT INTO `{cohort_dataset}.{audit_table}` (process_name, run_id, step, status, logged_at, details)
VALUES (@process_name, @run_id, @step, @status, @logged_at, PARSE_JSON(@details))
