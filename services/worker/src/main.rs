//! The worker binary: consumes until SIGTERM, then drains in-flight jobs and exits.

use tollgate_worker::{start, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_runtime::telemetry::init("worker");
    let config = WorkerConfig::load()?;
    let cancel = tollgate_runtime::shutdown::on_signal();
    let running = start(config).await?;
    cancel.cancelled().await;
    running.stop().await;
    Ok(())
}
