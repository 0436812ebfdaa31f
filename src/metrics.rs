//! Prometheus metrics, on a registry this struct owns (not the global one), so tests
//! and several in-process instances never collide.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub jobs_total: IntCounterVec,
    pub assignments_total: IntCounterVec,
    pub scim_requests_total: IntCounterVec,
    pub scim_request_duration_seconds: HistogramVec,
    pub scim_retries_total: IntCounterVec,
    pub scim_rate_limited_total: IntCounter,
    pub oauth_token_refreshes_total: IntCounterVec,
    pub pipeline_queue_depth: IntGaugeVec,
    pub webhook_deliveries_total: IntCounterVec,
    pub webhook_outbox_pending: IntGauge,
    pub webhook_outbox_oldest_pending_seconds: IntGauge,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub policy_reload_errors_total: IntCounter,
    pub policy_valid: IntGauge,
    pub pipeline_restarts_total: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("rolesync")
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            jobs_total: IntCounterVec::new(
                opts("jobs_total", "Jobs that reached a final status"),
                &["status"],
            )?,
            assignments_total: IntCounterVec::new(
                opts("assignments_total", "Rows that reached an outcome"),
                &["outcome"],
            )?,
            scim_requests_total: IntCounterVec::new(
                opts("scim_requests_total", "Calls made to the SCIM target"),
                &["method", "route", "status"],
            )?,
            scim_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new("scim_request_duration_seconds", "Latency of SCIM calls")
                    .namespace("rolesync")
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ]),
                &["method", "route"],
            )?,
            scim_retries_total: IntCounterVec::new(
                opts("scim_retries_total", "SCIM calls retried, by reason"),
                &["reason"],
            )?,
            scim_rate_limited_total: IntCounter::with_opts(opts(
                "scim_rate_limited_total",
                "429 answers from the SCIM target",
            ))?,
            oauth_token_refreshes_total: IntCounterVec::new(
                opts("oauth_token_refreshes_total", "OAuth token requests"),
                &["result"],
            )?,
            pipeline_queue_depth: IntGaugeVec::new(
                opts(
                    "pipeline_queue_depth",
                    "Messages waiting in each pipeline channel",
                ),
                &["stage"],
            )?,
            webhook_deliveries_total: IntCounterVec::new(
                opts("webhook_deliveries_total", "Webhook delivery attempts"),
                &["result"],
            )?,
            webhook_outbox_pending: IntGauge::with_opts(opts(
                "webhook_outbox_pending",
                "Webhook events waiting for delivery",
            ))?,
            webhook_outbox_oldest_pending_seconds: IntGauge::with_opts(opts(
                "webhook_outbox_oldest_pending_seconds",
                "Age of the oldest webhook event waiting for delivery",
            ))?,
            http_requests_total: IntCounterVec::new(
                opts("http_requests_total", "HTTP requests served"),
                &["method", "route", "status"],
            )?,
            http_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Latency of HTTP requests served",
                )
                .namespace("rolesync"),
                &["method", "route"],
            )?,
            policy_reload_errors_total: IntCounter::with_opts(opts(
                "policy_reload_errors_total",
                "Policy reloads refused because the new policy is invalid",
            ))?,
            policy_valid: IntGauge::with_opts(opts(
                "policy_valid",
                "1 when the policy file on disk is the one in force, 0 when it failed to load",
            ))?,
            pipeline_restarts_total: IntCounterVec::new(
                opts(
                    "pipeline_restarts_total",
                    "Times a pipeline stage ended unexpectedly (panicked or returned) and the pipeline was restarted",
                ),
                &["stage"],
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.jobs_total.clone()))?;
        r.register(Box::new(m.assignments_total.clone()))?;
        r.register(Box::new(m.scim_requests_total.clone()))?;
        r.register(Box::new(m.scim_request_duration_seconds.clone()))?;
        r.register(Box::new(m.scim_retries_total.clone()))?;
        r.register(Box::new(m.scim_rate_limited_total.clone()))?;
        r.register(Box::new(m.oauth_token_refreshes_total.clone()))?;
        r.register(Box::new(m.pipeline_queue_depth.clone()))?;
        r.register(Box::new(m.webhook_deliveries_total.clone()))?;
        r.register(Box::new(m.webhook_outbox_pending.clone()))?;
        r.register(Box::new(m.webhook_outbox_oldest_pending_seconds.clone()))?;
        r.register(Box::new(m.http_requests_total.clone()))?;
        r.register(Box::new(m.http_request_duration_seconds.clone()))?;
        r.register(Box::new(m.policy_reload_errors_total.clone()))?;
        r.register(Box::new(m.policy_valid.clone()))?;
        r.register(Box::new(m.pipeline_restarts_total.clone()))?;
        m.policy_valid.set(1);
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
