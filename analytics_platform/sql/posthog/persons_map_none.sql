    -- person_map fragment of persons_rebuild.sql without PostHog's persons export: no
    -- mapping, so every distinct_id is its own person.
    SELECT CAST(NULL AS STRING) AS distinct_id, CAST(NULL AS STRING) AS person_id
    LIMIT 0
