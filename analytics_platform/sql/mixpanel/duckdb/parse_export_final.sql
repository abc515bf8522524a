-- DuckDB dialect: run by the in-process export parser (mixpanel/export_parse.py), never
-- sent to the warehouse.
-- Stage 3, over `px` (stage 2 rows): time, identity and the remaining reasons.
-- Fragments (render_sql): source is empty (px is a registered table: the general path)
-- or "px AS (<parse_export_fast.sql>), " (the fast path in one query); extra is empty
-- or ", parsed" (passed through from stage 2a); properties is "properties, " or empty
-- (the fast path: the caller keeps its own views of X); ms_threshold and max_time are
-- the parser's MS_THRESHOLD and MAX_TIME.  id_hash: DuckDB's 64-bit hash of event_id (the
-- parser's duplicate detection compares the ids of equal hashes).
WITH {source}c AS (
    SELECT *,
           CASE
               WHEN reason IS NOT NULL THEN reason
               WHEN event_name IS NULL OR event_name = '' THEN 'missing_event'
               WHEN time_text IS NULL THEN 'missing_time'
               WHEN tnum IS NULL OR NOT isfinite(tnum) OR tnum <= 0 OR tnum >= {max_time} THEN 'invalid_time'
           END AS why
    FROM (SELECT *, TRY_CAST(time_text AS DOUBLE) AS tnum FROM px)
)
SELECT *, hash(event_id) AS id_hash FROM (
SELECT line_no,
       why AS reason,
       CASE WHEN why IS NOT NULL THEN NULL
            WHEN insert_id IS NULL OR insert_id = ''
            THEN 'h:' || md5(concat_ws(chr(31), event_name, COALESCE(distinct_id, ''), time_text, properties))
            ELSE insert_id
       END AS event_id,
       event_name,
       distinct_id,
       ts AS event_timestamp,
       CAST(ts AS DATE) AS event_date,
       {properties}device_id,
       os,
       TRY_CAST(TRY_CAST(processing_text AS DOUBLE) AS BIGINT) AS mp_processing_time_ms,
       reserialised,
       raw_line{extra}
FROM (
    SELECT *,
           CASE WHEN why IS NULL THEN make_timestamp(CAST(round(
               CASE WHEN tnum >= {ms_threshold} THEN tnum * 1000 ELSE tnum * 1000000 END) AS BIGINT)) END AS ts
    FROM c
)
)
