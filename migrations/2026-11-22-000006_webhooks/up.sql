-- The webhook service (issue 5; SPEC "Webhooks"): verified inbound PSP events, stored once
-- with their raw body, and outbound Standard Webhooks deliveries to tenants' endpoints with
-- a per-attempt log.

-- Inbound: one row per PSP event, whatever the PSP sends it how many times. `id` is also
-- the outbox message id and the envelope id of the `psp.{psp}.{type}` event on the bus.
CREATE TABLE psp_events (
    id              uuid PRIMARY KEY,
    psp             text NOT NULL CHECK (psp IN ('stripe', 'razorpay')),
    event_id        text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type      text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 255),
    -- The PSP's own timestamp of the event (Stripe `created`).
    created_at_psp  timestamptz NOT NULL,
    livemode        boolean NOT NULL,
    -- `data.object.id` (Stripe) / the payload entity's id (Razorpay), when present.
    object_id       text,
    -- Exactly the bytes the PSP signed.
    raw_body        bytea NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (psp, event_id)
);
CREATE INDEX psp_events_received ON psp_events (received_at);

-- A tenant's endpoint. `event_types` holds exact types or `*` (all). Secrets are
-- `whsec_<base64>` (Standard Webhooks); during a rotation the previous secret keeps signing
-- until `previous_secret_expires_at`.
CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                         text NOT NULL
        CHECK (url ~ '^https?://' AND length(url) <= 2048),
    description                 text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    event_types                 text[] NOT NULL
        CHECK (cardinality(event_types) BETWEEN 1 AND 64),
    secret                      text NOT NULL CHECK (secret LIKE 'whsec\_%'),
    previous_secret             text CHECK (previous_secret LIKE 'whsec\_%'),
    previous_secret_expires_at  timestamptz,
    disabled_at                 timestamptz,
    disabled_reason             text,
    -- First failed attempt since the last success; an endpoint failing for longer than the
    -- configured time is disabled.
    failing_since               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at);

-- One domain event of a tenant that at least one endpoint subscribed to; `id` is the
-- envelope id (the fan-out is idempotent on it), `occurred_at` the envelope's time.
CREATE TABLE webhook_messages (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_tenant ON webhook_messages (tenant_id, created_at);

-- One message to one endpoint. `pending` rows are due at `next_attempt_at` (a dispatcher
-- that claims one pushes it forward as a lease); `attempts` counts attempts made.
CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY,
    message_id        uuid NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    endpoint_id       uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id         uuid NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz,
    -- A redelivery asked by the tenant or an operator is waiting (its attempt is `manual`).
    manual            boolean NOT NULL DEFAULT false,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, endpoint_id),
    CHECK (status <> 'pending' OR next_attempt_at IS NOT NULL)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

-- The delivery log: one row per HTTP attempt.
CREATE TABLE webhook_attempts (
    id                bigserial PRIMARY KEY,
    delivery_id       uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt           integer NOT NULL CHECK (attempt >= 1),
    trigger           text NOT NULL CHECK (trigger IN ('scheduled', 'manual')),
    started_at        timestamptz NOT NULL,
    duration_ms       integer NOT NULL CHECK (duration_ms >= 0),
    status_code       integer,
    error             text,
    -- At most 1 KiB of the response body.
    response_snippet  text CHECK (length(response_snippet) <= 1024),
    retry_after_secs  integer,
    -- When the next attempt is due (NULL: none scheduled).
    next_attempt_at   timestamptz,
    UNIQUE (delivery_id, attempt)
);
