//! Logging: JSON lines on stdout (or human-readable with `LOG_FORMAT=pretty`), filtered by
//! `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests start several services in one
/// process) are no-ops.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let result = if pretty {
        tracing_subscriber::fmt().with_env_filter(filter).try_init()
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_env_filter(filter)
            .try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "logging initialised");
    }
}
