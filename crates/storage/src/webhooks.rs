//! The webhook service's tables (issue 5; SPEC "Webhooks"): inbound PSP events stored once
//! with their raw body, tenants' endpoints, the messages fanned out to them, one delivery per
//! message and endpoint, and the per-attempt log. The rules (retry schedule, disabling,
//! signing) live in the webhook service; this module reads and writes rows. Every query a
//! tenant can reach takes the tenant id.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema_webhooks::{
    psp_events, webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_messages,
};
use crate::StorageError;

/// The wildcard entry of `webhook_endpoints.event_types`: every event type.
pub const ALL_EVENT_TYPES: &str = "*";

// ---------------------------------------------------------------------------------------------
// Inbound PSP events

/// A verified PSP event to store (`psp_events`).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = psp_events)]
pub struct NewPspEvent {
    /// Also the outbox message id and the bus envelope id.
    pub id: Uuid,
    /// `stripe` | `razorpay`.
    pub psp: String,
    /// The PSP's event id (`evt_…`), unique per PSP.
    pub event_id: String,
    pub event_type: String,
    /// The PSP's own timestamp of the event.
    pub created_at_psp: DateTime<Utc>,
    pub livemode: bool,
    pub object_id: Option<String>,
    /// The bytes the PSP signed.
    pub raw_body: Vec<u8>,
}

/// A stored PSP event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = psp_events)]
pub struct PspEventRow {
    pub id: Uuid,
    pub psp: String,
    pub event_id: String,
    pub event_type: String,
    pub created_at_psp: DateTime<Utc>,
    pub livemode: bool,
    pub object_id: Option<String>,
    pub raw_body: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

/// Inserts the events that are new (`ON CONFLICT (psp, event_id) DO NOTHING`, also between
/// rows of `events`) and returns the ids of those inserted; an event whose id is not returned
/// was a duplicate. Call inside the transaction that writes their outbox rows.
pub async fn insert_psp_events(
    conn: &mut AsyncPgConnection,
    events: &[NewPspEvent],
) -> Result<Vec<Uuid>, StorageError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    Ok(diesel::insert_into(psp_events::table)
        .values(events)
        .on_conflict((psp_events::psp, psp_events::event_id))
        .do_nothing()
        .returning(psp_events::id)
        .get_results(conn)
        .await?)
}

/// Stores verified PSP events with their outbox rows (caller's transaction): each event new
/// to `(psp, event_id)` is inserted and its message queued; a duplicate writes nothing.
/// Returns, per item in order, whether it was new.
pub async fn store_psp_events(
    conn: &mut AsyncPgConnection,
    items: &[(NewPspEvent, crate::models::NewOutboxMessage)],
) -> Result<Vec<bool>, StorageError> {
    let events: Vec<NewPspEvent> = items.iter().map(|(e, _)| e.clone()).collect();
    let inserted: std::collections::HashSet<Uuid> = insert_psp_events(conn, &events)
        .await?
        .into_iter()
        .collect();
    let messages: Vec<crate::models::NewOutboxMessage> = items
        .iter()
        .filter(|(e, _)| inserted.contains(&e.id))
        .map(|(_, m)| m.clone())
        .collect();
    if !messages.is_empty() {
        diesel::insert_into(crate::schema::outbox::table)
            .values(&messages)
            .execute(conn)
            .await?;
    }
    Ok(items
        .iter()
        .map(|(e, _)| inserted.contains(&e.id))
        .collect())
}

/// The stored event `event_id` of `psp`, if any.
pub async fn find_psp_event(
    conn: &mut AsyncPgConnection,
    psp: &str,
    event_id: &str,
) -> Result<Option<PspEventRow>, StorageError> {
    Ok(psp_events::table
        .filter(psp_events::psp.eq(psp))
        .filter(psp_events::event_id.eq(event_id))
        .select(PspEventRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// A tenant's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `http(s)://…`, at most 2048 bytes.
    pub url: String,
    pub description: String,
    /// Exact event types or [`ALL_EVENT_TYPES`].
    pub event_types: Vec<String>,
    /// `whsec_<base64>`: a secret, never logged.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_expires_at`.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// The first failed attempt since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A change to an endpoint, by intent.
#[derive(Debug, Clone)]
pub enum EndpointUpdate {
    /// The tenant edits its settings; `None` keeps a field.
    Edit {
        url: Option<String>,
        description: Option<String>,
        event_types: Option<Vec<String>>,
    },
    /// A new secret; the current one becomes `previous` until `previous_expires_at` (both
    /// `None`: the old secret stops at once).
    RotateSecret {
        secret: String,
        previous: Option<String>,
        previous_expires_at: Option<DateTime<Utc>>,
    },
    /// Enabled again: not disabled, not failing.
    Enable,
}

#[derive(AsChangeset)]
#[diesel(table_name = webhook_endpoints)]
struct EditChangeset {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    updated_at: DateTime<Utc>,
}

#[derive(AsChangeset)]
#[diesel(table_name = webhook_endpoints, treat_none_as_null = true)]
struct RotateChangeset {
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

#[derive(AsChangeset)]
#[diesel(table_name = webhook_endpoints, treat_none_as_null = true)]
struct EnableChangeset {
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
    failing_since: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// Inserts an endpoint.
pub async fn insert_endpoint(
    conn: &mut AsyncPgConnection,
    row: &EndpointRow,
) -> Result<(), StorageError> {
    diesel::insert_into(webhook_endpoints::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// A tenant's endpoints, oldest first.
pub async fn list_endpoints(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
) -> Result<Vec<EndpointRow>, StorageError> {
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::tenant_id.eq(tenant))
        .order((
            webhook_endpoints::created_at.asc(),
            webhook_endpoints::id.asc(),
        ))
        .select(EndpointRow::as_select())
        .load(conn)
        .await?)
}

/// One endpoint; `tenant` None for operators (any tenant). Errors: `NotFound`.
pub async fn find_endpoint(
    conn: &mut AsyncPgConnection,
    tenant: Option<Uuid>,
    id: Uuid,
) -> Result<EndpointRow, StorageError> {
    let mut query = webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(id))
        .select(EndpointRow::as_select())
        .into_boxed();
    if let Some(tenant) = tenant {
        query = query.filter(webhook_endpoints::tenant_id.eq(tenant));
    }
    Ok(query.first(conn).await?)
}

/// Applies `update` to the tenant's endpoint at `now`; returns the new row. Errors:
/// `NotFound`.
pub async fn update_endpoint(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    id: Uuid,
    update: EndpointUpdate,
    now: DateTime<Utc>,
) -> Result<EndpointRow, StorageError> {
    let target = webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(id))
        .filter(webhook_endpoints::tenant_id.eq(tenant));
    let query = diesel::update(target);
    let row = match update {
        EndpointUpdate::Edit {
            url,
            description,
            event_types,
        } => {
            query
                .set(EditChangeset {
                    url,
                    description,
                    event_types,
                    updated_at: now,
                })
                .returning(EndpointRow::as_returning())
                .get_result(conn)
                .await?
        }
        EndpointUpdate::RotateSecret {
            secret,
            previous,
            previous_expires_at,
        } => {
            query
                .set(RotateChangeset {
                    secret,
                    previous_secret: previous,
                    previous_secret_expires_at: previous_expires_at,
                    updated_at: now,
                })
                .returning(EndpointRow::as_returning())
                .get_result(conn)
                .await?
        }
        EndpointUpdate::Enable => {
            query
                .set(EnableChangeset {
                    disabled_at: None,
                    disabled_reason: None,
                    failing_since: None,
                    updated_at: now,
                })
                .returning(EndpointRow::as_returning())
                .get_result(conn)
                .await?
        }
    };
    Ok(row)
}

/// Deletes the tenant's endpoint with its deliveries and their attempts; false when there
/// was none.
pub async fn delete_endpoint(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<bool, StorageError> {
    let n = diesel::delete(
        webhook_endpoints::table
            .filter(webhook_endpoints::id.eq(id))
            .filter(webhook_endpoints::tenant_id.eq(tenant)),
    )
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// The tenant's enabled endpoints subscribed to `event_type` (listed, or `*`).
pub async fn subscribed_endpoints(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    event_type: &str,
) -> Result<Vec<Uuid>, StorageError> {
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::tenant_id.eq(tenant))
        .filter(webhook_endpoints::disabled_at.is_null())
        .filter(
            webhook_endpoints::event_types
                .overlaps_with(vec![event_type.to_owned(), ALL_EVENT_TYPES.to_owned()]),
        )
        .select(webhook_endpoints::id)
        .load(conn)
        .await?)
}

/// Records a failed attempt on the endpoint: `failing_since` is set unless already set.
/// Returns the endpoint (with its `failing_since`).
pub async fn mark_endpoint_failing(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<EndpointRow, StorageError> {
    diesel::update(
        webhook_endpoints::table
            .find(id)
            .filter(webhook_endpoints::failing_since.is_null()),
    )
    .set(webhook_endpoints::failing_since.eq(now))
    .execute(conn)
    .await?;
    Ok(webhook_endpoints::table
        .find(id)
        .select(EndpointRow::as_select())
        .first(conn)
        .await?)
}

/// Records a successful attempt: the endpoint is no longer failing.
pub async fn mark_endpoint_healthy(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<(), StorageError> {
    diesel::update(
        webhook_endpoints::table
            .find(id)
            .filter(webhook_endpoints::failing_since.is_not_null()),
    )
    .set(webhook_endpoints::failing_since.eq(None::<DateTime<Utc>>))
    .execute(conn)
    .await?;
    Ok(())
}

/// Disables an enabled endpoint and fails its pending deliveries (`last_error` says why).
/// Returns false when it was already disabled (nothing changed).
pub async fn disable_endpoint(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StorageError> {
    let n = diesel::update(
        webhook_endpoints::table
            .find(id)
            .filter(webhook_endpoints::disabled_at.is_null()),
    )
    .set((
        webhook_endpoints::disabled_at.eq(now),
        webhook_endpoints::disabled_reason.eq(reason),
        webhook_endpoints::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    if n == 0 {
        return Ok(false);
    }
    diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::endpoint_id.eq(id))
            .filter(webhook_deliveries::status.eq("pending")),
    )
    .set((
        webhook_deliveries::status.eq("failed"),
        webhook_deliveries::next_attempt_at.eq(None::<DateTime<Utc>>),
        webhook_deliveries::manual.eq(false),
        webhook_deliveries::last_error.eq("endpoint disabled"),
        webhook_deliveries::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Messages and deliveries

/// A tenant's domain event, as endpoints receive it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_messages)]
pub struct MessageRow {
    /// The envelope id.
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    /// The envelope's `data`.
    pub payload: serde_json::Value,
    /// The envelope's `time`.
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Inserts the message unless its id is stored already; true when inserted (a redelivered
/// envelope returns false and must not fan out again).
pub async fn insert_message(
    conn: &mut AsyncPgConnection,
    row: &MessageRow,
) -> Result<bool, StorageError> {
    let n = diesel::insert_into(webhook_messages::table)
        .values(row)
        .on_conflict(webhook_messages::id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// One message.
pub async fn find_message(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<MessageRow, StorageError> {
    Ok(webhook_messages::table
        .find(id)
        .select(MessageRow::as_select())
        .first(conn)
        .await?)
}

/// One message to one endpoint.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub message_id: Uuid,
    pub endpoint_id: Uuid,
    pub tenant_id: Uuid,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// When a pending delivery is due (or its lease ends).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A manual redelivery is waiting.
    pub manual: bool,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts deliveries (a message fanned out); an existing (message, endpoint) pair is kept.
pub async fn insert_deliveries(
    conn: &mut AsyncPgConnection,
    rows: &[DeliveryRow],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    diesel::insert_into(webhook_deliveries::table)
        .values(rows)
        .on_conflict(on_constraint(
            "webhook_deliveries_message_id_endpoint_id_key",
        ))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// A due delivery with what an attempt needs, claimed by [`claim_due`].
#[derive(Debug, Clone, QueryableByName)]
pub struct DueDelivery {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub tenant_id: Uuid,
    /// Attempts made before this one.
    #[diesel(sql_type = diesel::sql_types::Int4)]
    pub attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub manual: bool,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub url: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub secret: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub previous_secret: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub message_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub event_type: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub occurred_at: DateTime<Utc>,
}

/// Claims up to `limit` pending deliveries due at `now` (oldest due first, rows another
/// dispatcher holds skipped, deliveries of disabled endpoints left alone) and leases them:
/// their `next_attempt_at` moves to `now + lease_secs`, so a dispatcher that dies mid-attempt
/// leaves them due again after the lease. A waiting manual redelivery is consumed by the claim
/// (`manual` is reset on the row and reported in [`DueDelivery::manual`]), so `manual` found
/// set when the attempt is recorded means a new redelivery was asked for meanwhile.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<DueDelivery>, StorageError> {
    use diesel::sql_types::{Double, Int8, Timestamptz};
    Ok(diesel::sql_query(
        "WITH due AS ( \
             SELECT d.id, d.manual AS was_manual FROM webhook_deliveries d \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
             ORDER BY d.next_attempt_at \
             LIMIT $2 \
             FOR UPDATE OF d SKIP LOCKED) \
         UPDATE webhook_deliveries d \
            SET next_attempt_at = $1 + make_interval(secs => $3), updated_at = $1, \
                manual = false \
           FROM due, webhook_endpoints e, webhook_messages m \
          WHERE d.id = due.id AND e.id = d.endpoint_id AND m.id = d.message_id \
            AND e.disabled_at IS NULL \
         RETURNING d.id, d.tenant_id, d.attempts, due.was_manual AS manual, \
                   e.id AS endpoint_id, e.url, \
                   e.secret, e.previous_secret, e.previous_secret_expires_at, \
                   m.id AS message_id, m.event_type, m.payload, m.occurred_at",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Int8, _>(limit)
    .bind::<Double, _>(lease_secs as f64)
    .load(conn)
    .await?)
}

/// Locks one delivery for the rest of the transaction. Errors: `NotFound`.
pub async fn lock_delivery(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<DeliveryRow, StorageError> {
    Ok(webhook_deliveries::table
        .find(id)
        .select(DeliveryRow::as_select())
        .for_update()
        .first(conn)
        .await?)
}

/// The outcome of an attempt, written onto its delivery.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = webhook_deliveries, treat_none_as_null = true)]
pub struct DeliveryOutcome {
    /// `pending` (another attempt at `next_attempt_at`), `succeeded` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub manual: bool,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Writes an attempt's outcome onto the delivery.
pub async fn set_delivery_outcome(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    outcome: &DeliveryOutcome,
) -> Result<(), StorageError> {
    diesel::update(webhook_deliveries::table.find(id))
        .set(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

/// Asks for an attempt now (manual redelivery), whatever the delivery's state; returns the
/// delivery. `tenant` None for operators. Errors: `NotFound`.
pub async fn request_redelivery(
    conn: &mut AsyncPgConnection,
    tenant: Option<Uuid>,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<DeliveryRow, StorageError> {
    let mut target = webhook_deliveries::table
        .filter(webhook_deliveries::id.eq(id))
        .into_boxed();
    if let Some(tenant) = tenant {
        target = target.filter(webhook_deliveries::tenant_id.eq(tenant));
    }
    let found: Uuid = target.select(webhook_deliveries::id).first(conn).await?;
    Ok(diesel::update(webhook_deliveries::table.find(found))
        .set((
            webhook_deliveries::status.eq("pending"),
            webhook_deliveries::next_attempt_at.eq(now),
            webhook_deliveries::manual.eq(true),
            webhook_deliveries::updated_at.eq(now),
        ))
        .returning(DeliveryRow::as_returning())
        .get_result(conn)
        .await?)
}

/// One delivery; `tenant` None for operators. Errors: `NotFound`.
pub async fn find_delivery(
    conn: &mut AsyncPgConnection,
    tenant: Option<Uuid>,
    id: Uuid,
) -> Result<DeliveryRow, StorageError> {
    let mut query = webhook_deliveries::table
        .filter(webhook_deliveries::id.eq(id))
        .select(DeliveryRow::as_select())
        .into_boxed();
    if let Some(tenant) = tenant {
        query = query.filter(webhook_deliveries::tenant_id.eq(tenant));
    }
    Ok(query.first(conn).await?)
}

/// Deliveries of an endpoint, newest first: at most `limit`, created before the delivery
/// `before` (a cursor) when given, of one `status` when given.
pub async fn list_deliveries(
    conn: &mut AsyncPgConnection,
    endpoint: Uuid,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(DeliveryRow, String)>, StorageError> {
    let mut query = webhook_deliveries::table
        .inner_join(webhook_messages::table)
        .filter(webhook_deliveries::endpoint_id.eq(endpoint))
        .select((DeliveryRow::as_select(), webhook_messages::event_type))
        .order(webhook_deliveries::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(webhook_deliveries::status.eq(status.to_owned()));
    }
    if let Some(before) = before {
        query = query.filter(webhook_deliveries::id.lt(before));
    }
    Ok(query.load(conn).await?)
}

// ---------------------------------------------------------------------------------------------
// Attempts

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: Uuid,
    /// 1-based.
    pub attempt: i32,
    /// `scheduled` or `manual`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// None when no response came (connection error, timeout).
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// At most 1 KiB of the response body.
    pub response_snippet: Option<String>,
    /// The receiver's `Retry-After`, seconds.
    pub retry_after_secs: Option<i32>,
    /// When the next attempt is due; None when none is scheduled.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// An attempt to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_attempts)]
pub struct NewAttempt {
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
    pub retry_after_secs: Option<i32>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Appends an attempt to the log.
pub async fn insert_attempt(
    conn: &mut AsyncPgConnection,
    attempt: &NewAttempt,
) -> Result<(), StorageError> {
    diesel::insert_into(webhook_attempts::table)
        .values(attempt)
        .execute(conn)
        .await?;
    Ok(())
}

/// A delivery's attempts, first to last.
pub async fn attempts_of(
    conn: &mut AsyncPgConnection,
    delivery: Uuid,
) -> Result<Vec<AttemptRow>, StorageError> {
    Ok(webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq(delivery))
        .order(webhook_attempts::attempt.asc())
        .select(AttemptRow::as_select())
        .load(conn)
        .await?)
}
