-- Fragment (partition pruning): lets BigQuery skip event_date partitions; the rule itself is
-- on event_timestamp. Formatted in only when the events table has an event_date column.
AND (event_date IS NULL OR event_date BETWEEN DATE(@window_start) AND DATE(@as_of))
