//! The job-intake binary: loads configuration, starts, waits for SIGTERM, drains.

use tollgate_job_intake::{start, IntakeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_runtime::telemetry::init("job-intake");
    let config = IntakeConfig::load()?;
    let cancel = tollgate_runtime::shutdown::on_signal();
    let running = start(config, cancel.clone()).await?;
    cancel.cancelled().await;
    running.stop().await;
    Ok(())
}
