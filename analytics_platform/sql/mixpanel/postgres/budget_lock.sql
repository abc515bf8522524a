-- Serialise every budget decision (all runs, processes and pods) until the transaction ends.
SELECT pg_advisory_xact_lock(hashtext('analytics_platform.mixpanel.export_budget'))
