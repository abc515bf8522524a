-- Forget export queries older than the retention (the decision needs the last hour only).
DELETE FROM mixpanel_export_budget WHERE queried_at < :before
