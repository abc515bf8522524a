-- Rows of one table of the domain ({table}: a validated identifier).
SELECT COUNT(*) AS n FROM `{dataset}.{table}`
