-- DuckDB dialect: run by the in-process export parser (mixpanel/export_parse.py), never
-- sent to the warehouse.
-- Stage 1, over `blk(line_no, line)`: string operations only.  Mixpanel's own shape is
-- '{"event":<S>,"properties":<X>}'; the first '"properties":' is that key when the text
-- before it is exactly '{"event":<one JSON string>,' (the pattern cannot occur inside a
-- JSON string: its quotes would be escaped).  When S is a JSON string and X a JSON object,
-- the line is valid and X is the raw properties text, cut out unchanged (stage 2a parses
-- X once; a line whose X does not parse goes to the general path).  Only the positions
-- come out (`ppos`: 1-based character position of '"properties":', `body_len`: the
-- line's length without its newline): stage 2a cuts S and X out of the line itself, so
-- the ~500-byte X is not copied out to Arrow and back in between the stages.
SELECT line_no, ppos, body_len,
       starts_with(line, '{"event":') AND ppos > 11
       AND substr(line, ppos - 1, 1) = ',' AND brace_end
       AND substr(line, 10, 1) = '"' AND substr(line, ppos + 13, 1) = '{'
       AND json_valid(substr(line, 10, greatest(ppos - 11, 0))) AS fast_ok
FROM (
    SELECT line_no, line,
           instr(line, '"properties":') AS ppos,
           length(line) - nl AS body_len,
           CASE nl WHEN 2 THEN suffix(line, E'}\r\n') WHEN 1 THEN suffix(line, E'}\n') ELSE suffix(line, '}') END AS brace_end
    FROM (
        SELECT line_no, line,
               CASE WHEN suffix(line, E'\r\n') THEN 2 WHEN suffix(line, E'\n') THEN 1 ELSE 0 END AS nl
        FROM blk
    )
)
