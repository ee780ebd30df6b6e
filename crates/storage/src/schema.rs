//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        rate_limit_per_minute -> Int4,
        created_at -> Timestamptz,
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
        tenant_id -> Uuid,
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
    }
}

diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(job_attempts -> jobs (job_id));
diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    api_keys,
    job_types,
    jobs,
    job_attempts,
    outbox,
    ledger_entries
);
