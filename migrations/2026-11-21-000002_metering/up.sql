-- Usage metering (issue 3): the billable-metrics catalog, billing entities (accounts that own
-- workspaces, with the history of who owned what when), stored artifacts, and the ledger's
-- extensions for usage events, gateway traffic, storage and reversing entries.

-- The zone the usage API buckets days and months in unless a request names another (IANA name).
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
-- Usage before this instant belongs to finalized periods: new events stamped earlier are refused
-- (PERIOD_FINALIZED). The billing service moves it forward when it finalizes a period.
ALTER TABLE tenants ADD COLUMN usage_locked_before timestamptz;

-- Billable metrics: how a tenant's usage events are counted (SPEC "Usage metering").
CREATE TABLE billable_metrics (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code             text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_.:-]{0,63}$'),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    unit             text NOT NULL CHECK (length(unit) BETWEEN 1 AND 50),
    aggregation      text NOT NULL CHECK (aggregation IN ('count', 'sum', 'max', 'unique_count', 'latest', 'weighted_sum')),
    -- The event property holding the integer value (sum, max, latest, weighted_sum) or the
    -- distinct key (unique_count). count reads no property.
    field            text CHECK (field IS NULL OR length(field) BETWEEN 1 AND 100),
    -- The event property naming the operation whose weight applies, and the weights
    -- ({"task_create": 1, "ai_completion": 10}); an operation not listed gets default_weight,
    -- or is refused when default_weight is NULL.
    weight_property  text CHECK (weight_property IS NULL OR length(weight_property) BETWEEN 1 AND 100),
    weights          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(weights) = 'object'),
    default_weight   bigint CHECK (default_weight IS NULL OR default_weight >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code),
    CHECK ((aggregation = 'count') = (field IS NULL))
);

-- Billing entities: a tenant's customers. A personal account may own one workspace (enforced
-- by the API under a row lock); converting it to an organization creates the organization
-- account, moves the workspaces and records the instant (`converted_at`).
CREATE TABLE accounts (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('personal', 'organization')),
    external_id   text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 200),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    converted_to  uuid UNIQUE REFERENCES accounts (id),
    converted_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id),
    CHECK ((converted_to IS NULL) = (converted_at IS NULL)),
    CHECK (converted_to IS NULL OR kind = 'personal')
);

CREATE TABLE workspaces (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account_id   uuid NOT NULL REFERENCES accounts (id),
    external_id  text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 200),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX workspaces_account ON workspaces (account_id);

-- Who owned a workspace when: [valid_from, valid_to). Usage is attributed to the owner in
-- force at the usage's own timestamp.
CREATE TABLE workspace_owners (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    account_id    uuid NOT NULL REFERENCES accounts (id),
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,
    PRIMARY KEY (workspace_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

-- Stored artifacts (object storage). One row per stored version; a live key has one row
-- with deleted_at NULL. Bytes are metered in the ledger: +size on write, -size on delete.
CREATE TABLE artifacts (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 512),
    object_path   text NOT NULL,
    size_bytes    bigint NOT NULL CHECK (size_bytes >= 0),
    content_type  text NOT NULL,
    sha256        bytea NOT NULL CHECK (length(sha256) = 32),
    workspace_id  uuid REFERENCES workspaces (id),
    account_id    uuid REFERENCES accounts (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX artifacts_live_key ON artifacts (tenant_id, key) WHERE deleted_at IS NULL;

-- The ledger, extended. Sources: job (worker), event (usage events), traffic (gateway
-- requests), storage (artifacts), reversal (corrections).
-- * tenant_id becomes optional: a request the gateway could not authenticate is still metered.
-- * account_id / workspace_id: the billing entity in force at occurred_at, and the workspace.
--   No foreign keys on purpose: they are resolved in the writing transaction, and a foreign-key
--   check per row would lock the referenced rows on the ingestion hot path.
-- * dimension: the distinct key of a unique_count metric.
-- * reverses_id: the entry a reversal cancels (at most one reversal per entry).
ALTER TABLE ledger_entries ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE ledger_entries ADD COLUMN account_id uuid;
ALTER TABLE ledger_entries ADD COLUMN workspace_id uuid;
ALTER TABLE ledger_entries ADD COLUMN dimension text;
ALTER TABLE ledger_entries ADD COLUMN reverses_id bigint UNIQUE REFERENCES ledger_entries (id);
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_source_kind
    CHECK (source_kind IN ('job', 'event', 'traffic', 'storage', 'reversal'));
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_reversal
    CHECK ((source_kind = 'reversal') = (reverses_id IS NOT NULL));
-- Idempotency keys stay unique per tenant, and unauthenticated traffic (no tenant) shares one
-- space (NULLS NOT DISTINCT, PostgreSQL 15+).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_tenant_id_idempotency_key_key;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_tenant_idempotency_key
    UNIQUE NULLS NOT DISTINCT (tenant_id, idempotency_key);
DROP INDEX ledger_entries_tenant_time;
CREATE INDEX ledger_entries_tenant_metric_time ON ledger_entries (tenant_id, metric, occurred_at);
CREATE INDEX ledger_entries_tenant_id ON ledger_entries (tenant_id, id);
