-- DuckDB dialect: run by the in-process export parser (mixpanel/export_parse.py), never
-- sent to the warehouse; the `px` of parse_export_final.sql on the fast path.
-- Stage 2a, over `fx(line_no, line, ppos, body_len)` (lines of Mixpanel's shape): S and
-- X cut out, one parse of X; `f` is NULL when X is not valid JSON (`try`), and the
-- caller re-routes that line.
SELECT line_no,
       f IS NOT NULL AS parsed,
       CAST(NULL AS VARCHAR) AS reason,
       json_extract_string(s_tok, '$') AS event_name,
       f[1] AS time_text,
       f[2] AS distinct_id,
       f[3] AS insert_id,
       f[4] AS device_id,
       COALESCE(f[5], f[6]) AS os,
       f[7] AS processing_text,
       x AS properties,
       false AS reserialised,
       CAST(NULL AS VARCHAR) AS raw_line
FROM (
    SELECT line_no, s_tok, x,
           try(json_extract_string(x, ['$.time', '$.distinct_id', '$."$insert_id"', '$."$device_id"',
                                       '$."$os"', '$.mp_os', '$.mp_processing_time_ms'])) AS f
    FROM (
        SELECT line_no,
               substr(line, 10, ppos - 11) AS s_tok,
               substr(line, ppos + 13, body_len - ppos - 13) AS x
        FROM fx
    )
)
