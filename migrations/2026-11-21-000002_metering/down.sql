DROP INDEX ledger_entries_tenant_id;
DROP INDEX ledger_entries_tenant_metric_time;
CREATE INDEX ledger_entries_tenant_time ON ledger_entries (tenant_id, occurred_at);
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_tenant_idempotency_key;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_tenant_id_idempotency_key_key
    UNIQUE (tenant_id, idempotency_key);
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_reversal;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_source_kind;
ALTER TABLE ledger_entries DROP COLUMN reverses_id;
ALTER TABLE ledger_entries DROP COLUMN dimension;
ALTER TABLE ledger_entries DROP COLUMN workspace_id;
ALTER TABLE ledger_entries DROP COLUMN account_id;
-- Restoring NOT NULL fails while unauthenticated traffic entries exist; the ledger is
-- append-only, so such a database cannot be rolled back past this migration.
ALTER TABLE ledger_entries ALTER COLUMN tenant_id SET NOT NULL;
DROP TABLE artifacts;
DROP TABLE workspace_owners;
DROP TABLE workspaces;
DROP TABLE accounts;
DROP TABLE billable_metrics;
ALTER TABLE tenants DROP COLUMN usage_locked_before;
ALTER TABLE tenants DROP COLUMN time_zone;
