-- Cheaper rows on the job pipeline's hot path, found with pg_stat_statements and EXPLAIN
-- ANALYZE during a 10,000-job benchmark (docs/BENCHMARKS.md, 2026-11-24):
--
-- 1. Per-row foreign-key checks against the tenant. Every job and every ledger entry (four per
--    job: its own and three traffic entries) ran `SELECT 1 FROM tenants WHERE id = $1 FOR KEY
--    SHARE`: concurrent transactions all lock the same tenant row, so each one adds itself to
--    a MultiXact on that row, writes WAL for the lock and dirties the tenants page. EXPLAIN
--    ANALYZE of a batch of 8 jobs: 0.75 ms with the foreign keys, 0.43 ms without. The checks
--    become one statement-level query per INSERT (AFTER … FOR EACH STATEMENT with a
--    transition table), which refuses the whole statement with SQLSTATE 23503
--    (foreign_key_violation) and the old constraint's name, as the foreign key did. What the
--    foreign key's row lock guarded against, the parent disappearing before the child
--    commits, cannot happen: tenants are never deleted (a trigger below refuses it), ledger
--    entries are never deleted (their own trigger), and neither a job's nor an entry's tenant
--    ever changes.
-- 2. HOT updates of jobs. A job is updated twice (processing, then its outcome); the partial
--    index `jobs_dead` named `status`, so no update was HOT and each rewrote an entry in every
--    index of the table. Dead jobs are now listed from `job_dead_letters`, written in the
--    transaction that makes a job dead and deleted by its replay; no index of jobs names a
--    column the worker updates, and a fillfactor leaves room on each page for the new
--    versions.
-- 3. `ledger_entries.reverses_id`: its UNIQUE constraint indexed the NULL of every entry that is
--    not a reversal (nearly all). A partial unique index over the non-NULL values enforces the
--    same rule ("an entry is reversed at most once"); the self-referencing foreign key's
--    per-row check becomes part of the statement-level check of (1).

-- (1) tenants: never deleted.
CREATE FUNCTION tenants_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tenants are never deleted: their jobs and ledger entries are kept for billing'
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER tenants_no_delete BEFORE DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_refuse_delete();
CREATE TRIGGER tenants_no_truncate BEFORE TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenants_refuse_delete();

-- (1) jobs.tenant_id.
ALTER TABLE jobs DROP CONSTRAINT jobs_tenant_id_fkey;
CREATE FUNCTION jobs_check_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    SELECT i.tenant_id INTO missing
    FROM (SELECT DISTINCT tenant_id FROM inserted) i
    WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = i.tenant_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "jobs" violates foreign key constraint "jobs_tenant_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'jobs_tenant_id_fkey',
                  TABLE = 'jobs', DETAIL = format('Key (tenant_id)=(%s) is not present in table "tenants".', missing);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_check_tenants AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_check_tenants();
CREATE FUNCTION jobs_keep_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a job''s tenant never changes' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER jobs_keep_tenant BEFORE UPDATE OF tenant_id ON jobs
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION jobs_keep_tenant();

-- (1) and (3) ledger_entries.tenant_id and reverses_id (the ledger already refuses UPDATE,
-- DELETE and TRUNCATE).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_tenant_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_reverses_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_reverses_id_key;
CREATE UNIQUE INDEX ledger_entries_reverses_id_key ON ledger_entries (reverses_id)
    WHERE reverses_id IS NOT NULL;
CREATE FUNCTION ledger_entries_check_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT i.tenant_id::text INTO missing
    FROM (SELECT DISTINCT tenant_id FROM inserted WHERE tenant_id IS NOT NULL) i
    WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = i.tenant_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "ledger_entries" violates foreign key constraint "ledger_entries_tenant_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_entries_tenant_id_fkey',
                  TABLE = 'ledger_entries', DETAIL = format('Key (tenant_id)=(%s) is not present in table "tenants".', missing);
    END IF;
    SELECT i.reverses_id::text INTO missing
    FROM inserted i
    WHERE i.reverses_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.id = i.reverses_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "ledger_entries" violates foreign key constraint "ledger_entries_reverses_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_entries_reverses_id_fkey',
                  TABLE = 'ledger_entries', DETAIL = format('Key (reverses_id)=(%s) is not present in table "ledger_entries".', missing);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ledger_entries_check_refs AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_check_refs();

-- (2) dead letters and HOT updates of jobs.
CREATE TABLE job_dead_letters (
    job_id     uuid PRIMARY KEY REFERENCES jobs (id),
    tenant_id  uuid NOT NULL,
    died_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_dead_letters_tenant ON job_dead_letters (tenant_id, job_id);
INSERT INTO job_dead_letters (job_id, tenant_id, died_at)
    SELECT id, tenant_id, coalesce(finished_at, updated_at) FROM jobs WHERE status = 'dead';
DROP INDEX jobs_dead;
-- Room for a job's two updates on its own page (new pages only; existing ones fill as before).
ALTER TABLE jobs SET (fillfactor = 60);
