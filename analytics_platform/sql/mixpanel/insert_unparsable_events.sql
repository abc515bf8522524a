-- Quarantine the batch's events whose properties text the warehouse cannot parse exactly
-- (SAFE.PARSE_JSON is NULL: e.g. a number BigQuery could only store rounded, nesting
-- beyond its limit): one row per (partition_date, line) in `{dataset}.{rejected}`, reason
-- 'warehouse_invalid_json'.  raw_line is the line rebuilt from the event name and the
-- properties text exactly as received (at most 100,000 characters; line_hash: SHA-256 of
-- the whole).  Runs in the same transaction as insert_new_events.sql.
INSERT INTO `{dataset}.{rejected}` (raw_line, reason, partition_date, seen_at, line_hash)
SELECT SUBSTR(r.line, 1, 100000), 'warehouse_invalid_json', r.event_date, r.inserted_at, r.line_hash
FROM (
  SELECT l.line, l.event_date, l.inserted_at, TO_HEX(SHA256(l.line)) AS line_hash
  FROM (
    SELECT CONCAT('{{"event":', TO_JSON_STRING(s.event_name), ',"properties":', s.properties, '}}') AS line,
           s.event_date, s.inserted_at
    FROM `{batch_dataset}.{batch}` AS s
    WHERE SAFE.PARSE_JSON(s.properties, wide_number_mode=>'exact') IS NULL
  ) AS l
) AS r
WHERE NOT EXISTS (
  SELECT 1
  FROM `{dataset}.{rejected}` AS t
  WHERE t.partition_date BETWEEN @date_from AND @date_to
    AND t.partition_date = r.event_date
    AND t.line_hash = r.line_hash
)
