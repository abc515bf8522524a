-- Does the table or view :n (schema-qualified name) exist?
SELECT to_regclass(:n) IS NOT NULL
