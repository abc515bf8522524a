    -- person_map fragment of persons_rebuild.sql when PostHog's persons export exists:
    -- each distinct_id -> its person_id, the latest mapping (ordered by the export's
    -- version / insertion columns when it has them, filled by
    -- analytics_platform.posthog.store from validated column names).
    SELECT distinct_id, person_id
    FROM (
      SELECT
        distinct_id,
        CAST(person_id AS STRING) AS person_id,
        ROW_NUMBER() OVER (PARTITION BY distinct_id ORDER BY {persons_order}) AS rn
      FROM `{posthog_dataset}.persons`
      WHERE distinct_id IS NOT NULL AND person_id IS NOT NULL
    )
    WHERE rn = 1
