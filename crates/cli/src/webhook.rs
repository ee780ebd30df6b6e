//! `tollgatectl webhook …` (issue 5): tenants' webhook endpoints, an endpoint's deliveries,
//! one delivery's attempt log, and manual redelivery. They call the webhook service's library
//! directly against PostgreSQL; a redelivery becomes due at once and the running webhook
//! service's dispatcher makes the attempt (within `delivery.poll_interval_ms`).

use anyhow::Context;
use clap::Subcommand;
use tollgate_domain::{DeliveryId, EndpointId};
use tollgate_storage::AsyncPgConnection;
use tollgate_webhook::deliveries;
use tollgate_webhook::endpoints::EndpointView;

/// `tollgatectl webhook …`
#[derive(Subcommand)]
pub enum WebhookCommand {
    /// A tenant's endpoints: id, status, event types, URL.
    Endpoints {
        #[arg(long)]
        tenant: String,
    },
    /// An endpoint's deliveries, newest first.
    Deliveries {
        /// `ep_…`
        #[arg(long)]
        endpoint: String,
        /// Only `pending`, `succeeded` or `failed`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One delivery with its message and every attempt.
    Show {
        /// `dlv_…`
        delivery: String,
    },
    /// Attempt a delivery again now (also a failed or succeeded one).
    Redeliver {
        /// `dlv_…`
        delivery: String,
    },
}

/// Runs a webhook command. `tenant` is the tenant's id when the command names one.
pub async fn run(
    conn: &mut AsyncPgConnection,
    tenant: Option<uuid::Uuid>,
    command: WebhookCommand,
) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Endpoints { .. } => {
            let tenant = tenant.context("--tenant is required")?;
            let rows = tollgate_storage::webhooks::list_endpoints(conn, tenant).await?;
            println!(
                "{:<36} {:<9} {:<40} url",
                "endpoint", "status", "event types"
            );
            for row in &rows {
                let view = EndpointView::from(row);
                let status = if view.failing_since.is_some() && view.status == "enabled" {
                    "failing"
                } else {
                    view.status
                };
                println!(
                    "{:<36} {:<9} {:<40} {}",
                    view.id,
                    status,
                    view.event_types.join(","),
                    view.url
                );
            }
        }
        WebhookCommand::Deliveries {
            endpoint,
            status,
            limit,
        } => {
            let endpoint: EndpointId = endpoint.parse()?;
            let rows = deliveries::list(
                conn,
                None,
                endpoint,
                status.as_deref(),
                None,
                limit.clamp(1, 200),
            )
            .await?;
            println!(
                "{:<37} {:<26} {:<10} {:>8} {:>6}  next attempt",
                "delivery", "event type", "status", "attempts", "last"
            );
            for d in rows {
                println!(
                    "{:<37} {:<26} {:<10} {:>8} {:>6}  {}",
                    d.id,
                    d.event_type,
                    d.status,
                    d.attempts,
                    d.last_status_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    d.next_attempt_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        WebhookCommand::Show { delivery } => {
            let id: DeliveryId = delivery.parse()?;
            let detail = deliveries::detail(conn, None, id).await?;
            let d = &detail.delivery;
            println!(
                "{} {} to {}: {} after {} attempt(s)",
                d.id, d.event_type, d.endpoint_id, d.status, d.attempts
            );
            println!("  webhook-id {}", d.message_id);
            for a in &detail.attempt_log {
                println!(
                    "  #{:<3} {:<9} {} {:>6} ms  {:<5} {}",
                    a.attempt,
                    a.trigger,
                    a.started_at.to_rfc3339(),
                    a.duration_ms,
                    a.status_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    a.error.as_deref().unwrap_or("")
                );
            }
        }
        WebhookCommand::Redeliver { delivery } => {
            let id: DeliveryId = delivery.parse()?;
            let view = deliveries::redeliver(conn, None, id).await?;
            println!(
                "{} is due now (attempt {} will be made by the webhook service)",
                view.id,
                view.attempts + 1
            );
        }
    }
    Ok(())
}
