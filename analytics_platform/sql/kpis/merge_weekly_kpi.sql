-- Upsert P and S of many users into their week's row in ONE statement.
-- The JSONB merge `kpis || patch` is evaluated by PostgreSQL against the row version it
-- has locked (ON CONFLICT DO UPDATE re-reads the latest committed version under READ
-- COMMITTED), so keys written concurrently by others (I_t, E_t, ...) are never lost.
-- The patch holds only P and S; it holds only S when P is NULL (n = 0).
-- Rows are taken in user_id order so concurrent runs lock rows in the same order.
-- :week_start date, :written_at timestamptz, :user_ids text[], :p_values float8[], :s_values float8[]
WITH patch AS (
    SELECT v.user_id,
           CASE WHEN v.p IS NULL THEN jsonb_build_object('S', v.s)
                ELSE jsonb_build_object('P', v.p, 'S', v.s) END AS kpis
    FROM unnest(
        CAST(:user_ids AS text[]),
        CAST(:p_values AS double precision[]),
        CAST(:s_values AS double precision[])
    ) AS v(user_id, p, s)
),
upsert AS (
    INSERT INTO weekly_kpi AS w (user_id, week_start, kpis, updated_at)
    SELECT patch.user_id, CAST(:week_start AS date), patch.kpis, CAST(:written_at AS timestamptz)
    FROM patch
    ORDER BY patch.user_id
    ON CONFLICT (user_id, week_start) DO UPDATE
        SET kpis = COALESCE(w.kpis, CAST('{}' AS jsonb)) || EXCLUDED.kpis,
            updated_at = EXCLUDED.updated_at
    RETURNING (w.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted)     AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM upsert
