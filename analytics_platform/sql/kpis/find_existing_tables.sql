-- Which of the given table/view names exist in the application database.
-- :names text[]
SELECT name
FROM unnest(CAST(:names AS text[])) AS t(name)
WHERE to_regclass(name) IS NOT NULL
