-- The metered job pipeline: tenants and their API keys, the job-type catalog, jobs with their
-- attempt history, the transactional outbox and the append-only usage ledger.

CREATE TABLE tenants (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    rate_limit_per_minute integer NOT NULL DEFAULT 6000 CHECK (rate_limit_per_minute > 0),
    created_at            timestamptz NOT NULL DEFAULT now()
);

-- Keys look like `tg_<prefix>_<secret>`; only the SHA-256 of the whole key is stored.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text NOT NULL UNIQUE,
    key_hash    bytea NOT NULL CHECK (length(key_hash) = 32),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE job_types (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             text NOT NULL,
    executor         text NOT NULL CHECK (executor IN ('http')),
    endpoint         text NOT NULL,
    timeout_ms       integer NOT NULL CHECK (timeout_ms > 0),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 25),
    weight           bigint NOT NULL DEFAULT 1 CHECK (weight >= 0),
    max_input_bytes  integer NOT NULL DEFAULT 262144 CHECK (max_input_bytes > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    job_type         text NOT NULL,
    idempotency_key  text NOT NULL,
    request_hash     bytea NOT NULL,
    input            jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('queued', 'processing', 'retrying', 'succeeded', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    output           jsonb,
    units            bigint,
    cost             bigint,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (tenant_id, idempotency_key)
);
-- Ids are UUIDv7 (time-ordered), so (tenant, id) serves newest-first cursor pagination.
CREATE INDEX jobs_tenant_id ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_dead ON jobs (tenant_id, id) WHERE status = 'dead';

-- Every attempt's outcome, kept for dead jobs and audits (a replay keeps the history).
CREATE TABLE job_attempts (
    id           bigserial PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES jobs (id),
    attempt      integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('succeeded', 'retryable', 'permanent')),
    error        text,
    http_status  integer,
    duration_ms  bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, id);

-- Transactional outbox: written in the same transaction as the state change it announces;
-- the relay publishes with publisher confirms, then stamps published_at.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    message_id    uuid NOT NULL UNIQUE,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- The usage ledger. Append-only: corrections are reversing entries, never edits.
-- `idempotency_key` makes a second write of the same fact a no-op (e.g. `job:<job id>`).
CREATE TABLE ledger_entries (
    id               bigserial PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    idempotency_key  text NOT NULL,
    metric           text NOT NULL,
    raw_units        bigint NOT NULL,
    weighted_units   bigint NOT NULL,
    cost             bigint NOT NULL,
    source_kind      text NOT NULL,
    source_id        text NOT NULL,
    context          jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX ledger_entries_tenant_time ON ledger_entries (tenant_id, occurred_at);

CREATE FUNCTION ledger_entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused (write a reversing entry instead)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse_change();

CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change();
