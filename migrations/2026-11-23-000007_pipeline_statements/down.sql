DROP FUNCTION tollgate_append_traffic(uuid[], uuid[], text[], text[], text[], int4[], int8[], int8[], timestamptz[], text, text, text, text);
DROP FUNCTION tollgate_complete_jobs(uuid[], int4[], jsonb[], int8[], int8[]);
DROP FUNCTION tollgate_start_attempts(uuid[], int4[]);
DROP FUNCTION tollgate_insert_jobs(uuid[], uuid[], text[], text[], bytea[], jsonb[], text[], int4[], uuid[], uuid[], text[], text[], bytea[]);
