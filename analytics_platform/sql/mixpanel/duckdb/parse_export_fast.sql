-- DuckDB dialect: run by the in-process export parser (mixpanel/export_parse.py), never
-- sent to the warehouse; the `px` of parse_export_final.sql on the fast path.
-- Stage 2a, over `fx(line_no, s_tok, x)`: lines of Mixpanel's shape
-- '{"event":<S>,"properties":<X>}' as found by the parser (export_parse._fast_lines),
-- S and X being string views into the line (nothing copied).  One parse of S and one of
-- X; `parsed` is false when S is not one JSON string or X not one JSON value (`try`),
-- and the caller re-routes that line to the general path.
SELECT line_no,
       f IS NOT NULL AND event_name IS NOT NULL AS parsed,
       CAST(NULL AS VARCHAR) AS reason,
       event_name,
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
    SELECT line_no, x,
           try(json_extract_string(s_tok, '$')) AS event_name,
           try(json_extract_string(x, ['$.time', '$.distinct_id', '$."$insert_id"', '$."$device_id"',
                                       '$."$os"', '$.mp_os', '$.mp_processing_time_ms'])) AS f
    FROM fx
)
