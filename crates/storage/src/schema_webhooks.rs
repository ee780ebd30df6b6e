//! Diesel table definitions of the webhook service's tables
//! (`migrations/2026-11-22-000006_webhooks`).

diesel::table! {
    psp_events (id) {
        id -> Uuid,
        psp -> Text,
        event_id -> Text,
        event_type -> Text,
        created_at_psp -> Timestamptz,
        livemode -> Bool,
        object_id -> Nullable<Text>,
        raw_body -> Bytea,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        url -> Text,
        description -> Text,
        event_types -> Array<Text>,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        disabled_at -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
        failing_since -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_messages (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        event_type -> Text,
        payload -> Jsonb,
        occurred_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Uuid,
        message_id -> Uuid,
        endpoint_id -> Uuid,
        tenant_id -> Uuid,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Nullable<Timestamptz>,
        manual -> Bool,
        last_status_code -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Uuid,
        attempt -> Int4,
        trigger -> Text,
        started_at -> Timestamptz,
        duration_ms -> Int4,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        response_snippet -> Nullable<Text>,
        retry_after_secs -> Nullable<Int4>,
        next_attempt_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> webhook_messages (message_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::allow_tables_to_appear_in_same_query!(
    psp_events,
    webhook_endpoints,
    webhook_messages,
    webhook_deliveries,
    webhook_attempts
);
