ALTER TABLE jobs RESET (fillfactor);
CREATE INDEX jobs_dead ON jobs (tenant_id, id) WHERE status = 'dead';
DROP TABLE job_dead_letters;

DROP TRIGGER ledger_entries_check_refs ON ledger_entries;
DROP FUNCTION ledger_entries_check_refs();
DROP INDEX ledger_entries_reverses_id_key;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_reverses_id_key UNIQUE (reverses_id);
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_reverses_id_fkey
    FOREIGN KEY (reverses_id) REFERENCES ledger_entries (id);
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id);

DROP TRIGGER jobs_keep_tenant ON jobs;
DROP FUNCTION jobs_keep_tenant();
DROP TRIGGER jobs_check_tenants ON jobs;
DROP FUNCTION jobs_check_tenants();
ALTER TABLE jobs ADD CONSTRAINT jobs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);

DROP TRIGGER tenants_no_truncate ON tenants;
DROP TRIGGER tenants_no_delete ON tenants;
DROP FUNCTION tenants_refuse_delete();
