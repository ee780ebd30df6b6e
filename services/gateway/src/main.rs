//! The gateway binary: serves until SIGTERM, then drains.

use tollgate_gateway::{start, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_runtime::telemetry::init("gateway");
    let config = GatewayConfig::load()?;
    let cancel = tollgate_runtime::shutdown::on_signal();
    let running = start(config).await?;
    cancel.cancelled().await;
    running.stop().await;
    Ok(())
}
