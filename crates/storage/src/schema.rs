//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        rate_limit_per_minute -> Int4,
        created_at -> Timestamptz,
        time_zone -> Text,
        usage_locked_before -> Nullable<Timestamptz>,
        billing_enforced -> Bool,
        invoice_prefix -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        prefix -> Text,
        key_hash -> Bytea,
        name -> Text,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    job_types (tenant_id, name) {
        tenant_id -> Uuid,
        name -> Text,
        executor -> Text,
        endpoint -> Text,
        timeout_ms -> Int4,
        max_attempts -> Int4,
        weight -> Int8,
        max_input_bytes -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        required_feature -> Nullable<Text>,
    }
}

diesel::table! {
    jobs (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        job_type -> Text,
        idempotency_key -> Text,
        request_hash -> Bytea,
        input -> Jsonb,
        status -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        output -> Nullable<Jsonb>,
        units -> Nullable<Int8>,
        cost -> Nullable<Int8>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        workspace_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    job_attempts (id) {
        id -> Int8,
        job_id -> Uuid,
        attempt -> Int4,
        outcome -> Text,
        error -> Nullable<Text>,
        http_status -> Nullable<Int4>,
        duration_ms -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    job_dead_letters (job_id) {
        job_id -> Uuid,
        tenant_id -> Uuid,
        died_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        message_id -> Uuid,
        exchange -> Text,
        routing_key -> Text,
        payload -> Bytea,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Int8,
        tenant_id -> Nullable<Uuid>,
        idempotency_key -> Text,
        metric -> Text,
        raw_units -> Int8,
        weighted_units -> Int8,
        cost -> Int8,
        source_kind -> Text,
        source_id -> Text,
        context -> Jsonb,
        occurred_at -> Timestamptz,
        recorded_at -> Timestamptz,
        account_id -> Nullable<Uuid>,
        workspace_id -> Nullable<Uuid>,
        dimension -> Nullable<Text>,
        reverses_id -> Nullable<Int8>,
    }
}

diesel::table! {
    billable_metrics (tenant_id, code) {
        tenant_id -> Uuid,
        code -> Text,
        name -> Text,
        unit -> Text,
        aggregation -> Text,
        field -> Nullable<Text>,
        weight_property -> Nullable<Text>,
        weights -> Jsonb,
        default_weight -> Nullable<Int8>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    accounts (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        kind -> Text,
        external_id -> Text,
        name -> Text,
        converted_to -> Nullable<Uuid>,
        converted_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    workspaces (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        account_id -> Uuid,
        external_id -> Text,
        name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    workspace_owners (workspace_id, valid_from) {
        workspace_id -> Uuid,
        account_id -> Uuid,
        valid_from -> Timestamptz,
        valid_to -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    artifacts (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        key -> Text,
        object_path -> Text,
        size_bytes -> Int8,
        content_type -> Text,
        sha256 -> Bytea,
        workspace_id -> Nullable<Uuid>,
        account_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    plans (tenant_id, code) {
        tenant_id -> Uuid,
        code -> Text,
        current_version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    plan_versions (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        plan_code -> Text,
        version -> Int4,
        name -> Text,
        billing_interval -> Text,
        currency -> Text,
        base_fee_minor -> Int8,
        trial_days -> Int4,
        features -> Array<Text>,
        concurrency -> Nullable<Int4>,
        requests_per_minute -> Nullable<Int4>,
        downgrade_grace_days -> Int4,
        definition -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    plan_quotas (plan_version_id, metric) {
        plan_version_id -> Uuid,
        metric -> Text,
        quantity -> Int8,
        soft_pct -> Int4,
        hard_pct -> Nullable<Int4>,
    }
}

diesel::table! {
    plan_charges (plan_version_id, metric) {
        plan_version_id -> Uuid,
        metric -> Text,
        position -> Int4,
        description -> Text,
        charge -> Jsonb,
    }
}

diesel::table! {
    coupons (tenant_id, code) {
        tenant_id -> Uuid,
        code -> Text,
        definition -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        account_id -> Uuid,
        plan_version_id -> Uuid,
        status -> Text,
        anchor_at -> Timestamptz,
        current_period_start -> Timestamptz,
        current_period_end -> Timestamptz,
        period_index -> Int4,
        trial_end -> Nullable<Timestamptz>,
        cancel_at_period_end -> Bool,
        canceled_at -> Nullable<Timestamptz>,
        pending_plan_version_id -> Nullable<Uuid>,
        grace_plan_version_id -> Nullable<Uuid>,
        grace_until -> Nullable<Timestamptz>,
        coupon_code -> Nullable<Text>,
        coupon_first_period -> Nullable<Int4>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    subscription_changes (id) {
        id -> Int8,
        subscription_id -> Uuid,
        kind -> Text,
        from_plan_version_id -> Nullable<Uuid>,
        to_plan_version_id -> Nullable<Uuid>,
        from_status -> Nullable<Text>,
        to_status -> Nullable<Text>,
        effective_at -> Timestamptz,
        period_start -> Nullable<Timestamptz>,
        proration_credit_minor -> Nullable<Int8>,
        proration_charge_minor -> Nullable<Int8>,
        reason -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    quota_counters (subscription_id, metric, period_start) {
        subscription_id -> Uuid,
        metric -> Text,
        period_start -> Timestamptz,
        used -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    quota_thresholds (subscription_id, metric, period_start, threshold_pct) {
        subscription_id -> Uuid,
        metric -> Text,
        period_start -> Timestamptz,
        threshold_pct -> Int4,
        used -> Int8,
        quantity -> Int8,
        reached_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    invoices (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        account_id -> Uuid,
        subscription_id -> Nullable<Uuid>,
        plan_version_id -> Nullable<Uuid>,
        status -> Text,
        currency -> Text,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        full_period_end -> Timestamptz,
        period_index -> Int4,
        grace_until -> Timestamptz,
        number -> Nullable<Int8>,
        number_text -> Nullable<Text>,
        subtotal_minor -> Int8,
        discount_minor -> Int8,
        total_minor -> Int8,
        pdf_artifact_id -> Nullable<Uuid>,
        finalized_at -> Nullable<Timestamptz>,
        paid_at -> Nullable<Timestamptz>,
        voided_at -> Nullable<Timestamptz>,
        void_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

// `quantity` and `unit_price` are `numeric`; they are read and written with raw SQL as text
// (see `invoices.rs`), so they are not listed here.
diesel::table! {
    invoice_lines (id) {
        id -> Int8,
        invoice_id -> Uuid,
        position -> Int4,
        kind -> Text,
        description -> Text,
        metric -> Nullable<Text>,
        period_start -> Nullable<Timestamptz>,
        period_end -> Nullable<Timestamptz>,
        amount_minor -> Int8,
        detail -> Jsonb,
    }
}

diesel::table! {
    invoice_sequences (tenant_id) {
        tenant_id -> Uuid,
        last_number -> Int8,
    }
}

diesel::table! {
    credit_notes (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        invoice_id -> Uuid,
        amount_minor -> Int8,
        reason -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    reconciliation_runs (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        checked -> Int4,
        discrepancies -> Int4,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    reconciliation_discrepancies (id) {
        id -> Int8,
        run_id -> Uuid,
        tenant_id -> Uuid,
        subscription_id -> Nullable<Uuid>,
        invoice_id -> Nullable<Uuid>,
        metric -> Nullable<Text>,
        kind -> Text,
        expected -> Nullable<Text>,
        actual -> Nullable<Text>,
        detail -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(job_attempts -> jobs (job_id));
diesel::joinable!(job_dead_letters -> jobs (job_id));
diesel::joinable!(workspace_owners -> workspaces (workspace_id));
diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    api_keys,
    job_types,
    jobs,
    job_attempts,
    job_dead_letters,
    outbox,
    ledger_entries,
    billable_metrics,
    accounts,
    workspaces,
    workspace_owners,
    artifacts,
    plans,
    plan_versions,
    plan_quotas,
    plan_charges,
    coupons,
    subscriptions,
    subscription_changes,
    quota_counters,
    quota_thresholds,
    invoices,
    invoice_lines,
    invoice_sequences,
    credit_notes,
    reconciliation_runs,
    reconciliation_discrepancies
);
diesel::joinable!(plan_quotas -> plan_versions (plan_version_id));
diesel::joinable!(plan_charges -> plan_versions (plan_version_id));
diesel::joinable!(invoice_lines -> invoices (invoice_id));
diesel::joinable!(subscriptions -> accounts (account_id));
