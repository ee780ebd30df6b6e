//! `tollgate-demo-tenant`: runs the demo tenant HTTP service until SIGINT/SIGTERM.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use clap::Parser;
use tollgate_demo_tenant::WebhookReceiver;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Demo tenant service that Tollgate's worker calls to execute jobs"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "DEMO_TENANT_ADDR", default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// The `whsec_…` secret that verifies Tollgate's webhooks at `POST /webhooks`. Without
    /// it, set it once through `PUT /webhooks/secret` (Tollgate returns it when the endpoint
    /// is registered).
    #[arg(long, env = "DEMO_TENANT_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener =
        TcpListener::bind(args.addr).with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let webhooks = WebhookReceiver::new(args.webhook_secret.as_deref())
        .context("--webhook-secret / DEMO_TENANT_WEBHOOK_SECRET")?;
    let server =
        tollgate_demo_tenant::serve(listener, webhooks).context("starting the HTTP server")?;
    println!("demo-tenant listening on http://{addr}");
    server.await.context("running the HTTP server")
}
