-- Record one export query (before it is sent).
INSERT INTO mixpanel_export_budget (queried_at, purpose, run_id, request)
VALUES (:queried_at, :purpose, :run_id, :request)
