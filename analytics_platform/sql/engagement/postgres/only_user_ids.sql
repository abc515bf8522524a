-- fragment of delete_partition_rows.sql: only the requested users' rows (:ids text[])
AND user_id = ANY(:ids)
