-- Fragment (partition pruning): lets BigQuery skip event_date partitions; the rule itself is
-- on event_timestamp. Formatted in only when the events table has an event_date column.
AND (e.event_date IS NULL OR e.event_date = DATE(@day_start))
