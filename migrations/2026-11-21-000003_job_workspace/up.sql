-- A job may be submitted for a workspace; its ledger entry is then attributed to the
-- workspace's owner at the job's completion (SPEC "Usage metering and the ledger").
ALTER TABLE jobs ADD COLUMN workspace_id uuid REFERENCES workspaces (id);
