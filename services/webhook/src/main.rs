//! The webhook binary: serves inbound PSP webhooks and the tenant API, and delivers tenants'
//! webhooks, until SIGTERM.

use tollgate_webhook::{start, WebhookConfig};

/// mimalloc instead of glibc's malloc: under load glibc's malloc and free took about 10 % of
/// the services' CPU (perf of the gateway and job-intake at 1,000 jobs/s, docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
