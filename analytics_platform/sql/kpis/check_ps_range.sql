-- Asset check: in the given week, every P and S present in kpis is a JSON number in [0, 1].
-- :week_start date
WITH v AS (
    SELECT w.user_id,
           w.kpis -> 'P' IS NOT NULL
               AND NOT COALESCE(
                   CASE WHEN jsonb_typeof(w.kpis -> 'P') = 'number'
                        THEN CAST(w.kpis ->> 'P' AS double precision) BETWEEN 0 AND 1 END,
                   false) AS bad_p,
           w.kpis -> 'S' IS NOT NULL
               AND NOT COALESCE(
                   CASE WHEN jsonb_typeof(w.kpis -> 'S') = 'number'
                        THEN CAST(w.kpis ->> 'S' AS double precision) BETWEEN 0 AND 1 END,
                   false) AS bad_s
    FROM weekly_kpi AS w
    WHERE w.week_start = :week_start
)
SELECT count(*)                                AS rows_in_week,
       count(*) FILTER (WHERE bad_p)           AS bad_p,
       count(*) FILTER (WHERE bad_s)           AS bad_s,
       (array_agg(user_id ORDER BY user_id) FILTER (WHERE bad_p OR bad_s))[1:10] AS bad_examples
FROM v
