-- Rows of a table (materialization metadata of small tables).
SELECT COUNT(*) AS n FROM `{dataset}.{table}`
