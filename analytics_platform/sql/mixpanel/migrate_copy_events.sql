-- Copy the events table being migrated into the new table (partitioned by event_date,
-- clustered by event_name, event_id): one row per (event_id, UTC event date) - the key
-- the ingestion keeps unique - the first loaded row winning (as the ingestion keeps the
-- row loaded first).  The select list, the event date and the order are built by
-- mixpanel/migrate.py from the source table's columns.
INSERT INTO `{dataset}.{target}` ({columns})
SELECT {columns}
FROM (
  SELECT
    {select_columns},
    ROW_NUMBER() OVER (PARTITION BY s.event_id, {event_date} ORDER BY {order_by}) AS copy_rank
  FROM `{dataset}.{table}` AS s
  WHERE s.event_id IS NOT NULL AND s.event_timestamp IS NOT NULL
) AS c
WHERE c.copy_rank = 1
