//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        rate_limit_per_minute -> Int4,
        created_at -> Timestamptz,
        time_zone -> Text,
        usage_locked_before -> Nullable<Timestamptz>,
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

diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(job_attempts -> jobs (job_id));
diesel::joinable!(workspace_owners -> workspaces (workspace_id));
diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    api_keys,
    job_types,
    jobs,
    job_attempts,
    outbox,
    ledger_entries,
    billable_metrics,
    accounts,
    workspaces,
    workspace_owners,
    artifacts
);
