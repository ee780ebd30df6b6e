-- Payments (issue 5): collection through the PSP (Stripe first), verified PSP events applied
-- once each and in an order-safe way, dunning with stored retry schedules, refunds. Money is
-- integer minor units of the row's ISO 4217 currency (SPEC "Billing").

-- The PSP customer of a billing entity (account), created by checkout or linked by a
-- `checkout.session.completed` event. `default_payment_method` is what off-session payment
-- intents are confirmed with (from the setup intent of a completed setup-mode checkout).
CREATE TABLE psp_customers (
    account_id             uuid NOT NULL REFERENCES accounts (id),
    psp                    text NOT NULL CHECK (psp IN ('stripe', 'razorpay')),
    tenant_id              uuid NOT NULL REFERENCES tenants (id),
    customer_id            text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    default_payment_method text CHECK (length(default_payment_method) BETWEEN 1 AND 255),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, psp),
    UNIQUE (psp, customer_id)
);

-- One row per attempt to collect an invoice: the first (created when the invoice is finalized,
-- or when its account gets a PSP customer), each dunning retry, and payments the PSP reports
-- that Tollgate did not start (the customer paying on a hosted page). The idempotency key is
-- sent with the PSP call, so a crash between the call and the commit repeats the same call.
CREATE TABLE payments (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    invoice_id       uuid NOT NULL REFERENCES invoices (id),
    account_id       uuid NOT NULL REFERENCES accounts (id),
    attempt          integer NOT NULL CHECK (attempt >= 1),
    psp              text NOT NULL CHECK (psp IN ('stripe', 'razorpay')),
    -- pending: not yet sent to the PSP; processing: the PSP has it and the outcome comes by
    -- event; errored: the PSP refused the request itself (not a card failure).
    status           text NOT NULL
        CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'canceled', 'errored')),
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    idempotency_key  text NOT NULL UNIQUE,
    -- `tollgate` (the collector or a dunning retry) or `psp` (reported by a PSP event).
    origin           text NOT NULL DEFAULT 'tollgate' CHECK (origin IN ('tollgate', 'psp')),
    psp_payment_id   text,
    psp_charge_id    text,
    failure_code     text,
    failure_message  text,
    refunded_minor   bigint NOT NULL DEFAULT 0,
    -- The collector claims pending rows whose time has come (and pushes it on as a lease).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- When the PSP reported the current status (the event's or the call's time).
    status_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, attempt),
    CHECK (refunded_minor BETWEEN 0 AND amount_minor)
);
CREATE UNIQUE INDEX payments_psp_payment ON payments (psp, psp_payment_id)
    WHERE psp_payment_id IS NOT NULL;
CREATE INDEX payments_pending ON payments (next_attempt_at) WHERE status = 'pending';
CREATE INDEX payments_tenant_invoice ON payments (tenant_id, invoice_id);
CREATE INDEX payments_charge ON payments (psp_charge_id) WHERE psp_charge_id IS NOT NULL;

-- Refunds asked for through the API (`POST /v1/invoices/{id}/refund`).
CREATE TABLE payment_refunds (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    payment_id       uuid NOT NULL REFERENCES payments (id),
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status           text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled', 'requires_action', 'errored')),
    idempotency_key  text NOT NULL UNIQUE,
    psp_refund_id    text UNIQUE,
    failure_message  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_refunds_payment ON payment_refunds (payment_id);

-- Every PSP event billing has taken from the queue, once (the primary key): a redelivered or
-- re-sent event finds its row and changes nothing. Unknown types are recorded as `ignored`.
CREATE TABLE psp_event_applications (
    psp             text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    created_at_psp  timestamptz NOT NULL,
    -- applied: state changed or confirmed; stale: older than what is applied; ignored: a type
    -- billing does not act on; unmatched: no Tollgate object found for it.
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored', 'unmatched')),
    tenant_id       uuid,
    detail          text,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (psp, event_id)
);
CREATE INDEX psp_event_applications_tenant ON psp_event_applications (tenant_id, applied_at);

-- The Stripe subscription a Tollgate subscription mirrors, and the PSP's timestamp of the
-- last status applied from it (an older event never overwrites a newer one).
ALTER TABLE subscriptions ADD COLUMN psp_subscription_id text;
ALTER TABLE subscriptions ADD COLUMN psp_state_at timestamptz;
CREATE UNIQUE INDEX subscriptions_psp ON subscriptions (psp_subscription_id)
    WHERE psp_subscription_id IS NOT NULL;

-- Per invoice: the outcome of the last payment result applied and the PSP's time of it, so
-- out-of-order events cannot move the payment state backwards.
ALTER TABLE invoices ADD COLUMN payment_state text CHECK (payment_state IN ('failed', 'succeeded'));
ALTER TABLE invoices ADD COLUMN payment_state_at timestamptz;

-- A final invoice may still move its payment state (and, as before, its status forward and
-- its paid/void fields); everything else stays frozen.
CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is % and cannot be deleted', OLD.id, OLD.status
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    IF (to_jsonb(NEW) - ARRAY['status', 'paid_at', 'voided_at', 'void_reason', 'updated_at',
                              'payment_state', 'payment_state_at'])
       IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['status', 'paid_at', 'voided_at', 'void_reason', 'updated_at',
                                               'payment_state', 'payment_state_at'])
       OR NOT (NEW.status = OLD.status
               OR (OLD.status = 'finalized' AND NEW.status IN ('paid', 'void', 'uncollectible'))
               OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))) THEN
        RAISE EXCEPTION 'invoice % is % and cannot change (BILLING_PERIOD_LOCKED)', OLD.id, OLD.status
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

-- Dunning (SPEC "Billing": retry on a schedule, notify, suspend after the last failure, resume
-- on payment). One case per invoice, opened by its first failed payment.
CREATE TABLE dunning_cases (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    invoice_id       uuid NOT NULL UNIQUE REFERENCES invoices (id),
    account_id       uuid NOT NULL REFERENCES accounts (id),
    subscription_id  uuid REFERENCES subscriptions (id),
    -- open: retries scheduled; exhausted: the last retry failed (subscription suspended);
    -- recovered: paid; canceled: the invoice was voided.
    status           text NOT NULL CHECK (status IN ('open', 'exhausted', 'recovered', 'canceled')),
    -- The failure the schedule counts from.
    first_failed_at  timestamptz NOT NULL,
    failures         integer NOT NULL DEFAULT 1 CHECK (failures >= 0),
    last_failure_code text,
    closed_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dunning_cases_subscription ON dunning_cases (subscription_id) WHERE status IN ('open', 'exhausted');
CREATE INDEX dunning_cases_tenant ON dunning_cases (tenant_id, id);

-- The retries of a case, written when it opens (a schedule survives restarts: it is rows, not
-- timers). A run executes the scheduled ones that are due; a payment cancels the rest.
CREATE TABLE dunning_attempts (
    id            uuid PRIMARY KEY,
    case_id       uuid NOT NULL REFERENCES dunning_cases (id),
    seq           integer NOT NULL CHECK (seq >= 1),
    scheduled_at  timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed', 'canceled')),
    payment_id    uuid REFERENCES payments (id),
    executed_at   timestamptz,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (case_id, seq)
);
CREATE INDEX dunning_attempts_due ON dunning_attempts (scheduled_at) WHERE status = 'scheduled';

-- Each notification dunning sent: the event (through the outbox) that tells the tenant, who
-- tells its customer (webhooks).
CREATE TABLE dunning_notifications (
    id          bigserial PRIMARY KEY,
    case_id     uuid NOT NULL REFERENCES dunning_cases (id),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    kind        text NOT NULL CHECK (kind IN ('payment_failed', 'retry_failed', 'suspended', 'recovered')),
    event_type  text NOT NULL,
    message_id  uuid NOT NULL,
    attempt     integer,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dunning_notifications_case ON dunning_notifications (case_id, id);
