-- How many of the batch's events the warehouse cannot parse (see
-- insert_unparsable_events.sql): counted in the run's rows_rejected every time, whether
-- or not the line was already quarantined by an earlier run.
SELECT COUNT(*) AS n
FROM `{batch_dataset}.{batch}` AS s
WHERE SAFE.PARSE_JSON(s.properties, wide_number_mode=>'exact') IS NULL
