//! The webhook service's metrics (names `tollgate_webhook_…`; labels bounded, never a tenant
//! or endpoint id).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Everything the service counts.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// `tollgate_webhook_inbound_total{psp, outcome}`: `accepted`, `duplicate`, or the
    /// refusal code in lower case (`invalid_signature`, `payload_too_large`, …).
    pub inbound: IntCounterVec,
    /// `tollgate_webhook_fanout_messages_total{outcome}`: `fanned_out`, `no_endpoint`,
    /// `duplicate`, `undecodable`, `error`.
    pub fanout: IntCounterVec,
    /// `tollgate_webhook_delivery_attempts_total{outcome}`: `succeeded`, `retrying`,
    /// `failed`.
    pub attempts: IntCounterVec,
    /// `tollgate_webhook_delivery_attempt_seconds`: the receiver's time per attempt.
    pub attempt_seconds: Histogram,
    /// `tollgate_webhook_endpoints_disabled_total`.
    pub disabled: IntCounter,
}

impl WebhookMetrics {
    /// Registers the metrics in `registry`. Errors: one is already registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let inbound = IntCounterVec::new(
            Opts::new(
                "tollgate_webhook_inbound_total",
                "Inbound PSP webhook requests by PSP and outcome",
            ),
            &["psp", "outcome"],
        )?;
        let fanout = IntCounterVec::new(
            Opts::new(
                "tollgate_webhook_fanout_messages_total",
                "Domain events taken by the webhook fan-out, by outcome",
            ),
            &["outcome"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "tollgate_webhook_delivery_attempts_total",
                "Outbound webhook delivery attempts by outcome",
            ),
            &["outcome"],
        )?;
        let attempt_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_webhook_delivery_attempt_seconds",
                "Outbound webhook attempt duration, seconds",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let disabled = IntCounter::new(
            "tollgate_webhook_endpoints_disabled_total",
            "Webhook endpoints disabled after failing for too long",
        )?;
        registry.register(Box::new(inbound.clone()))?;
        registry.register(Box::new(fanout.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(attempt_seconds.clone()))?;
        registry.register(Box::new(disabled.clone()))?;
        Ok(Self {
            inbound,
            fanout,
            attempts,
            attempt_seconds,
            disabled,
        })
    }
}
