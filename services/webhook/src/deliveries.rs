//! The delivery log as tenants and operators read it, and manual redelivery (issue 5, Build
//! 5: "logged per attempt, redeliverable by API/CLI").

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use tollgate_storage::webhooks::{self as store, AttemptRow, DeliveryRow, MessageRow};
use uuid::Uuid;

use crate::error::{or_not_found, WebhookError};
use tollgate_domain::{DeliveryId, EndpointId, MessageId};

/// One delivery (a message to an endpoint).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: DeliveryId,
    /// The `webhook-id` the endpoint receives (the same on every attempt).
    pub message_id: MessageId,
    pub endpoint_id: EndpointId,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DeliveryView {
    /// The view of a row whose message has `event_type`.
    pub fn new(row: &DeliveryRow, event_type: &str) -> Self {
        Self {
            id: DeliveryId::from_uuid(row.id),
            message_id: MessageId::from_uuid(row.message_id),
            endpoint_id: EndpointId::from_uuid(row.endpoint_id),
            event_type: event_type.to_owned(),
            status: row.status.clone(),
            attempts: row.attempts,
            next_attempt_at: (row.status == "pending")
                .then_some(row.next_attempt_at)
                .flatten(),
            last_status_code: row.last_status_code,
            last_error: row.last_error.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One HTTP attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// 1-based.
    pub attempt: i32,
    /// `scheduled` or `manual` (a redelivery).
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// None when no response came (connection refused, timeout).
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// At most 1 KiB of the response body.
    pub response_snippet: Option<String>,
    /// The receiver's `Retry-After`, seconds.
    pub retry_after_secs: Option<i32>,
    /// When the next attempt was scheduled after this one (None: none).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<AttemptRow> for AttemptView {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempt: row.attempt,
            trigger: row.trigger,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            status_code: row.status_code,
            error: row.error,
            response_snippet: row.response_snippet,
            retry_after_secs: row.retry_after_secs,
            next_attempt_at: row.next_attempt_at,
        }
    }
}

/// The message as endpoints receive it (the body of every attempt).
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub id: MessageId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl From<MessageRow> for MessageView {
    fn from(row: MessageRow) -> Self {
        Self {
            id: MessageId::from_uuid(row.id),
            event_type: row.event_type,
            timestamp: row.occurred_at,
            data: row.payload,
        }
    }
}

/// A delivery with its message and every attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub message: MessageView,
    /// Attempts, first to last.
    pub attempt_log: Vec<AttemptView>,
}

/// Reads a delivery with its message and attempts; `tenant` None for operators. Errors:
/// [`WebhookError::DeliveryNotFound`].
///
/// The reads share one snapshot (a read-only REPEATABLE READ transaction): an attempt and
/// the delivery's new state commit together, and reading them one after the other could show
/// an attempt in the log that the delivery's `status` and `attempts` do not reflect yet.
pub async fn detail(
    conn: &mut AsyncPgConnection,
    tenant: Option<Uuid>,
    id: DeliveryId,
) -> Result<DeliveryDetail, WebhookError> {
    let (row, message, attempts) = conn
        .build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let row = store::find_delivery(conn, tenant, id.as_uuid())
                .await
                .map_err(|e| or_not_found(e, WebhookError::DeliveryNotFound))?;
            let message = store::find_message(conn, row.message_id).await?;
            let attempts = store::attempts_of(conn, row.id).await?;
            Ok::<_, WebhookError>((row, message, attempts))
        })
        .await?;
    Ok(DeliveryDetail {
        delivery: DeliveryView::new(&row, &message.event_type),
        message: message.into(),
        attempt_log: attempts.into_iter().map(AttemptView::from).collect(),
    })
}

/// An endpoint's deliveries, newest first (at most `limit`, 1..=200; before the cursor
/// `before` when given; of one `status` when given). `tenant` None for operators. Errors:
/// [`WebhookError::EndpointNotFound`], an invalid status.
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant: Option<Uuid>,
    endpoint: EndpointId,
    status: Option<&str>,
    before: Option<DeliveryId>,
    limit: i64,
) -> Result<Vec<DeliveryView>, WebhookError> {
    if let Some(status) = status {
        if !matches!(status, "pending" | "succeeded" | "failed") {
            return Err(WebhookError::Invalid(
                "status: one of pending, succeeded, failed".into(),
            ));
        }
    }
    store::find_endpoint(conn, tenant, endpoint.as_uuid())
        .await
        .map_err(|e| or_not_found(e, WebhookError::EndpointNotFound))?;
    let rows = store::list_deliveries(
        conn,
        endpoint.as_uuid(),
        status,
        before.map(|d| d.as_uuid()),
        limit.clamp(1, 200),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|(row, event_type)| DeliveryView::new(row, event_type))
        .collect())
}

/// Asks for a new attempt now, whatever the delivery's state (a failed delivery gets one more
/// attempt; a succeeded one is sent again with the same `webhook-id`). The dispatcher makes
/// the attempt; it is logged with trigger `manual`. Errors: not found,
/// [`WebhookError::EndpointDisabled`].
pub async fn redeliver(
    conn: &mut AsyncPgConnection,
    tenant: Option<Uuid>,
    id: DeliveryId,
) -> Result<DeliveryView, WebhookError> {
    let row = store::find_delivery(conn, tenant, id.as_uuid())
        .await
        .map_err(|e| or_not_found(e, WebhookError::DeliveryNotFound))?;
    let endpoint = store::find_endpoint(conn, None, row.endpoint_id).await?;
    if endpoint.disabled_at.is_some() {
        return Err(WebhookError::EndpointDisabled);
    }
    let row = store::request_redelivery(conn, tenant, id.as_uuid(), Utc::now())
        .await
        .map_err(|e| or_not_found(e, WebhookError::DeliveryNotFound))?;
    let message = store::find_message(conn, row.message_id).await?;
    Ok(DeliveryView::new(&row, &message.event_type))
}
