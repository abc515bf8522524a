-- Rows of one engagement table ({table}: a validated identifier).
SELECT count(*) FROM {table}
