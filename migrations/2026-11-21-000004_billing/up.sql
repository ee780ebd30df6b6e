-- Billing (issue 4): the versioned plan catalog, subscriptions, quota counters kept by the
-- ledger itself, invoices that cannot change once final, credit notes and reconciliation.
-- Money is integer minor units of the row's ISO 4217 currency (SPEC "Billing").

-- Gating: when on, job-intake refuses jobs and events for a billing entity without a live
-- subscription (and requests that name no entity). Off by default so a tenant that does not
-- bill through Tollgate is never refused.
ALTER TABLE tenants ADD COLUMN billing_enforced boolean NOT NULL DEFAULT false;
-- Invoice numbers read `<prefix>-<000001>`; the sequence is per tenant (the issuer).
ALTER TABLE tenants ADD COLUMN invoice_prefix text NOT NULL DEFAULT 'INV'
    CHECK (invoice_prefix ~ '^[A-Z0-9][A-Z0-9-]{0,11}$');
ALTER TABLE tenants ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX tenants_updated ON tenants (updated_at);

-- A job type may require a plan feature (403 FEATURE_NOT_IN_PLAN at intake otherwise).
ALTER TABLE job_types ADD COLUMN required_feature text
    CHECK (required_feature IS NULL OR required_feature ~ '^[a-z][a-z0-9_.-]{0,63}$');

-- A plan's identity; what it costs and allows lives in its versions.
CREATE TABLE plans (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code             text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_-]{0,63}$'),
    current_version  integer NOT NULL CHECK (current_version >= 1),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- One immutable version of a plan. Editing a plan writes a new version; subscriptions keep
-- the version they were billed on until they change plan.
CREATE TABLE plan_versions (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL,
    plan_code             text NOT NULL,
    version               integer NOT NULL CHECK (version >= 1),
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    billing_interval      text NOT NULL CHECK (billing_interval IN ('week', 'month', 'year')),
    currency              text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    base_fee_minor        bigint NOT NULL CHECK (base_fee_minor >= 0),
    trial_days            integer NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 365),
    features              text[] NOT NULL DEFAULT '{}',
    -- Limits stored with the plan (enforced by the gateway/worker where noted in the docs).
    concurrency           integer CHECK (concurrency IS NULL OR concurrency > 0),
    requests_per_minute   integer CHECK (requests_per_minute IS NULL OR requests_per_minute > 0),
    -- After a downgrade the old version's entitlements stay in force this many days.
    downgrade_grace_days  integer NOT NULL DEFAULT 0 CHECK (downgrade_grace_days BETWEEN 0 AND 90),
    -- The whole normalized definition; `catalog apply` writes a version only when it differs.
    definition            jsonb NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, plan_code, version),
    FOREIGN KEY (tenant_id, plan_code) REFERENCES plans (tenant_id, code)
);

-- Quotas: `quantity` units of a metric per period. `metric` is a code or a prefix pattern
-- (`job.*`). Past soft_pct the request is allowed and flagged (billed as overage by the
-- charge); past hard_pct (when set) it is refused with 402 QUOTA_EXCEEDED.
CREATE TABLE plan_quotas (
    plan_version_id  uuid NOT NULL REFERENCES plan_versions (id),
    metric           text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,63}(\.\*)?$'),
    quantity         bigint NOT NULL CHECK (quantity > 0),
    soft_pct         integer NOT NULL DEFAULT 100 CHECK (soft_pct BETWEEN 1 AND 1000),
    hard_pct         integer CHECK (hard_pct IS NULL OR hard_pct BETWEEN 1 AND 1000),
    PRIMARY KEY (plan_version_id, metric),
    CHECK (hard_pct IS NULL OR hard_pct >= soft_pct)
);

-- Usage charges: one per metric (code or prefix pattern), `charge` is the pricing engine's
-- Charge (model, tiers, included units, minimum/maximum) as JSON.
CREATE TABLE plan_charges (
    plan_version_id  uuid NOT NULL REFERENCES plan_versions (id),
    metric           text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,63}(\.\*)?$'),
    position         integer NOT NULL,
    description      text NOT NULL,
    charge           jsonb NOT NULL,
    PRIMARY KEY (plan_version_id, metric)
);

CREATE FUNCTION catalog_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is immutable: % refused (apply a new plan version instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER plan_versions_immutable BEFORE UPDATE OR DELETE ON plan_versions
    FOR EACH ROW EXECUTE FUNCTION catalog_refuse_change();
CREATE TRIGGER plan_quotas_immutable BEFORE UPDATE OR DELETE ON plan_quotas
    FOR EACH ROW EXECUTE FUNCTION catalog_refuse_change();
CREATE TRIGGER plan_charges_immutable BEFORE UPDATE OR DELETE ON plan_charges
    FOR EACH ROW EXECUTE FUNCTION catalog_refuse_change();

-- Coupons (the pricing engine's Coupon as JSON: kind and duration).
CREATE TABLE coupons (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code        text NOT NULL CHECK (code ~ '^[A-Za-z0-9_-]{1,64}$'),
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- One subscription per billing entity (account) at a time; this row is the source of truth.
-- Periods are [current_period_start, current_period_end), anchored at `anchor_at`.
CREATE TABLE subscriptions (
    id                       uuid PRIMARY KEY,
    tenant_id                uuid NOT NULL REFERENCES tenants (id),
    account_id               uuid NOT NULL REFERENCES accounts (id),
    plan_version_id          uuid NOT NULL REFERENCES plan_versions (id),
    status                   text NOT NULL
        CHECK (status IN ('trialing', 'active', 'past_due', 'suspended', 'canceled')),
    anchor_at                timestamptz NOT NULL,
    current_period_start     timestamptz NOT NULL,
    current_period_end       timestamptz NOT NULL,
    -- Closed periods so far; coupon durations count in these.
    period_index             integer NOT NULL DEFAULT 0,
    trial_end                timestamptz,
    cancel_at_period_end     boolean NOT NULL DEFAULT false,
    canceled_at              timestamptz,
    -- A change scheduled for the end of the current period.
    pending_plan_version_id  uuid REFERENCES plan_versions (id),
    -- After a downgrade: the previous version's entitlements apply until grace_until.
    grace_plan_version_id    uuid REFERENCES plan_versions (id),
    grace_until              timestamptz,
    coupon_code              text,
    coupon_first_period      integer,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end > current_period_start),
    FOREIGN KEY (tenant_id, coupon_code) REFERENCES coupons (tenant_id, code)
);
CREATE UNIQUE INDEX subscriptions_one_live_per_account ON subscriptions (account_id)
    WHERE status <> 'canceled';
CREATE INDEX subscriptions_due ON subscriptions (current_period_end) WHERE status <> 'canceled';
CREATE INDEX subscriptions_tenant ON subscriptions (tenant_id, id);
CREATE INDEX subscriptions_updated ON subscriptions (updated_at);

-- Every change of a subscription, kept for history and audits. Plan changes carry their
-- proration (minor units), billed on the invoice of the period they happened in.
CREATE TABLE subscription_changes (
    id                    bigserial PRIMARY KEY,
    subscription_id       uuid NOT NULL REFERENCES subscriptions (id),
    kind                  text NOT NULL CHECK (kind IN ('start', 'upgrade', 'downgrade',
                              'schedule_change', 'scheduled_change_applied', 'cancel_at_period_end',
                              'resume', 'cancel', 'trial_end', 'renew', 'status')),
    from_plan_version_id  uuid REFERENCES plan_versions (id),
    to_plan_version_id    uuid REFERENCES plan_versions (id),
    from_status           text,
    to_status             text,
    effective_at          timestamptz NOT NULL,
    period_start          timestamptz,
    proration_credit_minor bigint,
    proration_charge_minor bigint,
    reason                text,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_changes_sub ON subscription_changes (subscription_id, id);

-- Running quota counters, maintained by the ledger itself (trigger below) in the same
-- transaction as the entries they count, so they are exactly as exactly-once as the ledger.
CREATE TABLE quota_counters (
    subscription_id  uuid NOT NULL REFERENCES subscriptions (id),
    metric           text NOT NULL,
    period_start     timestamptz NOT NULL,
    used             bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (subscription_id, metric, period_start)
);
CREATE INDEX quota_counters_updated ON quota_counters (updated_at);

-- Each 80 / 90 / 100 % crossing of a quota, once per period (the primary key); the billing
-- service publishes one usage.threshold_reached event per row and stamps published_at.
CREATE TABLE quota_thresholds (
    subscription_id  uuid NOT NULL REFERENCES subscriptions (id),
    metric           text NOT NULL,
    period_start     timestamptz NOT NULL,
    threshold_pct    integer NOT NULL CHECK (threshold_pct IN (80, 90, 100)),
    used             bigint NOT NULL,
    quantity         bigint NOT NULL,
    reached_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    PRIMARY KEY (subscription_id, metric, period_start, threshold_pct)
);
CREATE INDEX quota_thresholds_unpublished ON quota_thresholds (reached_at) WHERE published_at IS NULL;

CREATE FUNCTION ledger_count_quotas() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH hits AS (
        SELECT s.id AS subscription_id, q.metric, s.current_period_start AS period_start,
               q.quantity, SUM(i.weighted_units) AS delta
        FROM inserted i
        JOIN subscriptions s
          ON s.account_id = i.account_id AND s.status <> 'canceled'
         AND i.occurred_at >= s.current_period_start AND i.occurred_at < s.current_period_end
        JOIN plan_quotas q
          ON q.plan_version_id = s.plan_version_id
         AND (q.metric = i.metric
              OR (right(q.metric, 2) = '.*' AND starts_with(i.metric, left(q.metric, -1))))
        WHERE i.account_id IS NOT NULL
        GROUP BY 1, 2, 3, 4
    ), counted AS (
        INSERT INTO quota_counters AS c (subscription_id, metric, period_start, used)
        SELECT subscription_id, metric, period_start, delta FROM hits
        -- One lock order for every writer, so concurrent ledger writes cannot deadlock here.
        ORDER BY subscription_id, metric, period_start
        ON CONFLICT (subscription_id, metric, period_start)
            DO UPDATE SET used = c.used + excluded.used, updated_at = clock_timestamp()
        RETURNING c.subscription_id, c.metric, c.period_start, c.used
    )
    INSERT INTO quota_thresholds (subscription_id, metric, period_start, threshold_pct, used, quantity)
    SELECT c.subscription_id, c.metric, c.period_start, t.pct, c.used, h.quantity
    FROM counted c
    JOIN hits h USING (subscription_id, metric, period_start)
    CROSS JOIN (VALUES (80), (90), (100)) AS t (pct)
    WHERE c.used * 100 >= t.pct * h.quantity
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ledger_entries_count_quotas AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_quotas();

-- Billing runs in one place for the billing run's per-account aggregation.
CREATE INDEX ledger_entries_account_time ON ledger_entries (account_id, occurred_at)
    WHERE account_id IS NOT NULL;

-- Invoices. A draft may be recomputed until grace_until; finalizing assigns the gapless
-- number and freezes everything but the payment/void status (trigger below).
CREATE TABLE invoices (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    account_id       uuid NOT NULL REFERENCES accounts (id),
    subscription_id  uuid REFERENCES subscriptions (id),
    plan_version_id  uuid REFERENCES plan_versions (id),
    status           text NOT NULL CHECK (status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    -- The period's natural end; later than period_end when a cancellation cut it short.
    full_period_end  timestamptz NOT NULL,
    -- The subscription's paid-period number (coupon durations count in these).
    period_index     integer NOT NULL DEFAULT 0,
    grace_until      timestamptz NOT NULL,
    number           bigint,
    number_text      text,
    subtotal_minor   bigint NOT NULL DEFAULT 0,
    discount_minor   bigint NOT NULL DEFAULT 0,
    total_minor      bigint NOT NULL DEFAULT 0,
    pdf_artifact_id  uuid REFERENCES artifacts (id),
    finalized_at     timestamptz,
    paid_at          timestamptz,
    voided_at        timestamptz,
    void_reason      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, number),
    -- One invoice per subscription period: a rerun of a billing run finds it, never a second.
    UNIQUE (subscription_id, period_start),
    CHECK ((status = 'draft') = (number IS NULL)),
    CHECK (status <> 'void' OR void_reason IS NOT NULL)
);
CREATE INDEX invoices_tenant ON invoices (tenant_id, id);
CREATE INDEX invoices_open_drafts ON invoices (grace_until) WHERE status = 'draft';

-- Invoice lines: base fee, proration, usage (with tier breakdown), adjustment (late usage of an
-- earlier, finalized period) and discount. Amounts are rounded once per line, half-even.
CREATE TABLE invoice_lines (
    id            bigserial PRIMARY KEY,
    invoice_id    uuid NOT NULL REFERENCES invoices (id),
    position      integer NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('base_fee', 'proration', 'usage', 'adjustment', 'discount')),
    description   text NOT NULL,
    metric        text,
    -- The billed period of a usage/adjustment line (an adjustment names the earlier period).
    period_start  timestamptz,
    period_end    timestamptz,
    quantity      numeric,
    unit_price    numeric,
    amount_minor  bigint NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (invoice_id, position)
);
CREATE INDEX invoice_lines_metric_period ON invoice_lines (metric, period_start) WHERE metric IS NOT NULL;

-- The last number handed out per issuer; bumped under the row lock in the finalizing
-- transaction, so a rollback gives the number back and the sequence has no gaps.
CREATE TABLE invoice_sequences (
    tenant_id    uuid PRIMARY KEY REFERENCES tenants (id),
    last_number  bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
    -- Finalized and later: only the payment/void status may move, and only forward.
    IF (to_jsonb(NEW) - ARRAY['status', 'paid_at', 'voided_at', 'void_reason', 'updated_at'])
       IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['status', 'paid_at', 'voided_at', 'void_reason', 'updated_at'])
       OR NOT (NEW.status = OLD.status
               OR (OLD.status = 'finalized' AND NEW.status IN ('paid', 'void', 'uncollectible'))
               OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))) THEN
        RAISE EXCEPTION 'invoice % is % and cannot change (BILLING_PERIOD_LOCKED)', OLD.id, OLD.status
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER invoices_guard BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_guard();

CREATE FUNCTION invoice_lines_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    invoice_status text;
BEGIN
    SELECT status INTO invoice_status FROM invoices
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.invoice_id ELSE NEW.invoice_id END;
    IF invoice_status IS DISTINCT FROM 'draft'
       OR (TG_OP = 'UPDATE' AND OLD.invoice_id <> NEW.invoice_id) THEN
        RAISE EXCEPTION 'lines of a % invoice cannot change (BILLING_PERIOD_LOCKED)', invoice_status
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;
CREATE TRIGGER invoice_lines_guard BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_lines_guard();

-- Credit notes against a finalized invoice, with a reason; they never edit the invoice.
CREATE TABLE credit_notes (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    invoice_id    uuid NOT NULL REFERENCES invoices (id),
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_notes_invoice ON credit_notes (invoice_id);

-- Reconciliation: each run and every discrepancy it found.
CREATE TABLE reconciliation_runs (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    checked        integer NOT NULL DEFAULT 0,
    discrepancies  integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);

CREATE TABLE reconciliation_discrepancies (
    id               bigserial PRIMARY KEY,
    run_id           uuid NOT NULL REFERENCES reconciliation_runs (id),
    tenant_id        uuid NOT NULL,
    subscription_id  uuid,
    invoice_id       uuid,
    metric           text,
    kind             text NOT NULL,
    expected         text,
    actual           text,
    detail           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reconciliation_discrepancies_run ON reconciliation_discrepancies (run_id, id);
