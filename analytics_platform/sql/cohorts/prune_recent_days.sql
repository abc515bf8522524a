-- Fragment (partition pruning): lets BigQuery read only the recent event_date partitions;
-- the rule itself is on event_timestamp. Formatted in only when the events table has an
-- event_date column.
AND (event_date IS NULL OR event_date >= DATE(@since))
