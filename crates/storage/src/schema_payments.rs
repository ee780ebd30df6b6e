//! Diesel tables of the payments migration (issue 5): PSP customers, payments, refunds, the
//! record of applied PSP events, dunning cases/attempts/notifications, and the payment columns
//! the migration added to `subscriptions` and `invoices` (declared here as narrow views of those
//! tables, `subscription_psp` and `invoice_payment_state`, so `schema.rs` stays as it is).

diesel::table! {
    psp_customers (account_id, psp) {
        account_id -> Uuid,
        psp -> Text,
        tenant_id -> Uuid,
        customer_id -> Text,
        default_payment_method -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    payments (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        invoice_id -> Uuid,
        account_id -> Uuid,
        attempt -> Int4,
        psp -> Text,
        status -> Text,
        amount_minor -> Int8,
        currency -> Text,
        idempotency_key -> Text,
        origin -> Text,
        psp_payment_id -> Nullable<Text>,
        psp_charge_id -> Nullable<Text>,
        failure_code -> Nullable<Text>,
        failure_message -> Nullable<Text>,
        refunded_minor -> Int8,
        next_attempt_at -> Timestamptz,
        status_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        first_sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    payment_refunds (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        payment_id -> Uuid,
        amount_minor -> Int8,
        reason -> Text,
        status -> Text,
        idempotency_key -> Text,
        psp_refund_id -> Nullable<Text>,
        failure_message -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    psp_event_applications (psp, event_id) {
        psp -> Text,
        event_id -> Text,
        event_type -> Text,
        created_at_psp -> Timestamptz,
        outcome -> Text,
        tenant_id -> Nullable<Uuid>,
        detail -> Nullable<Text>,
        applied_at -> Timestamptz,
    }
}

diesel::table! {
    dunning_cases (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        invoice_id -> Uuid,
        account_id -> Uuid,
        subscription_id -> Nullable<Uuid>,
        status -> Text,
        first_failed_at -> Timestamptz,
        failures -> Int4,
        last_failure_code -> Nullable<Text>,
        closed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    dunning_attempts (id) {
        id -> Uuid,
        case_id -> Uuid,
        seq -> Int4,
        scheduled_at -> Timestamptz,
        status -> Text,
        payment_id -> Nullable<Uuid>,
        executed_at -> Nullable<Timestamptz>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    dunning_notifications (id) {
        id -> Int8,
        case_id -> Uuid,
        tenant_id -> Uuid,
        kind -> Text,
        event_type -> Text,
        message_id -> Uuid,
        attempt -> Nullable<Int4>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// The PSP columns of `subscriptions`.
    #[sql_name = "subscriptions"]
    subscription_psp (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        account_id -> Uuid,
        status -> Text,
        psp_subscription_id -> Nullable<Text>,
        psp_state_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// The payment columns of `invoices`.
    #[sql_name = "invoices"]
    invoice_payment_state (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        status -> Text,
        paid_at -> Nullable<Timestamptz>,
        payment_state -> Nullable<Text>,
        payment_state_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(dunning_attempts -> dunning_cases (case_id));
diesel::joinable!(payment_refunds -> payments (payment_id));
diesel::allow_tables_to_appear_in_same_query!(
    psp_customers,
    payments,
    payment_refunds,
    psp_event_applications,
    dunning_cases,
    dunning_attempts,
    dunning_notifications,
);
