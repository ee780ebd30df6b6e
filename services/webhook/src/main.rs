//! The webhook binary: serves inbound PSP webhooks and the tenant API, and delivers tenants'
//! webhooks, until SIGTERM.

use tollgate_webhook::{start, WebhookConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_runtime::telemetry::init("webhook");
    let config = WebhookConfig::load()?;
    let cancel = tollgate_runtime::shutdown::on_signal();
    let running = start(config, cancel.clone()).await?;
    cancel.cancelled().await;
    running.stop().await;
    Ok(())
}
