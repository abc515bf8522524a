-- DuckDB dialect: run by the in-process export parser (mixpanel/export_parse.py), never
-- sent to the warehouse.
-- Stage 2b, over `sx(line_no, line)` (every other line; rare): the general path.
WITH v AS MATERIALIZED (
    SELECT line_no, line, ok,
           CASE WHEN ok THEN json_type(line, ['$', '$.event', '$.properties']) END AS t,
           CASE WHEN ok THEN json_extract_string(line, [
               '$.event', '$.properties.time', '$.properties.distinct_id',
               '$.properties."$insert_id"', '$.properties."$device_id"',
               '$.properties."$os"', '$.properties.mp_os', '$.properties.mp_processing_time_ms'
           ]) END AS f
    FROM (SELECT line_no, line, json_valid(line) AS ok FROM sx)
), r AS MATERIALIZED (
    SELECT line_no, line, f,
           CASE
               WHEN NOT ok THEN CASE
                   WHEN starts_with(line, chr(0)) THEN 'invalid_utf8'
                   WHEN trim(line, E' \t\r\n') = '' THEN 'blank'
                   ELSE 'invalid_json' END
               WHEN t[1] <> 'OBJECT' THEN 'not_an_object'
               WHEN t[2] IS DISTINCT FROM 'VARCHAR' THEN 'missing_event'
               WHEN t[3] IS DISTINCT FROM 'OBJECT' THEN 'missing_properties'
           END AS reason
    FROM v
)
SELECT line_no, reason,
       f[1] AS event_name,
       f[2] AS time_text,
       f[3] AS distinct_id,
       f[4] AS insert_id,
       f[5] AS device_id,
       COALESCE(f[6], f[7]) AS os,
       f[8] AS processing_text,
       CASE WHEN reason IS NULL THEN CAST(json_extract(line, '$.properties') AS VARCHAR) END AS properties,
       reason IS NULL AS reserialised,
       CASE WHEN reason IS NOT NULL THEN
           rtrim(rtrim(CASE WHEN reason = 'invalid_utf8' THEN substr(line, 2) ELSE line END, E'\n'), E'\r')
       END AS raw_line
FROM r
WHERE reason IS NULL OR reason <> 'blank'
