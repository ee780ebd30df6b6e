//! The billing binary: serves the API and runs the scheduler until SIGTERM.

use tollgate_billing::{start, BillingConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_runtime::telemetry::init("billing");
    let config = BillingConfig::load()?;
    let cancel = tollgate_runtime::shutdown::on_signal();
    let running = start(config, cancel.clone()).await?;
    cancel.cancelled().await;
    running.stop().await;
    Ok(())
}
