//! Prometheus metrics, on a registry this struct owns (not the global one), so tests
//! and several in-process instances never collide.
//!
//! Every family is listed, with its type, labels and meaning, in `docs/metrics.md`. Label
//! values come from closed sets only (vocabularies, templated routes, HTTP statuses, stage
//! names): never a job, user or request id, so the number of series stays bounded.
//!
//! Three kinds of values:
//! - counters and histograms, moved where the thing happens (a SCIM call, a request, a job's end);
//! - gauges the running code sets (queue depths, the target's rate-limit headroom);
//! - gauges read from the store at scrape time (`refresh_store_gauges`): jobs by status, rows
//!   pending, the oldest unfinished job, the webhook outbox. They describe the shared store, so
//!   every replica reports the same values: aggregate them with `max`, never `sum`.

use crate::domain::{AuthFailure, JobStatus, Outcome, PausedReason, ScimRetryReason};
use crate::store::StoreGauges;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Duration;

/// The version of this build and the git commit it was built from (`build.rs`: the
/// `ROLESYNC_GIT_SHA` environment variable at build time, else `git rev-parse`, else `unknown`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = env!("ROLESYNC_GIT_SHA");

/// The `result` label of `rolesync_reconcile_schedule_runs_total`.
pub(crate) const SCHEDULE_RESULTS: [&str; 4] = ["fired", "taken", "skipped", "error"];

/// Store-derived gauges are read at most this often, however many scrapers ask.
const STORE_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// A scrape waits at most this long for the store; then the gauges keep their last values and
/// `rolesync_store_up` is 0.
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub build_info: IntGaugeVec,
    pub jobs_total: IntCounterVec,
    pub assignments_total: IntCounterVec,
    pub scim_requests_total: IntCounterVec,
    pub scim_calls_total: IntCounterVec,
    pub scim_request_duration_seconds: HistogramVec,
    pub scim_retries_total: IntCounterVec,
    pub scim_rate_limited_total: IntCounter,
    pub scim_rate_limit_per_minute: IntGauge,
    pub scim_ratelimit_allowed: IntGauge,
    pub scim_ratelimit_remaining: IntGauge,
    pub scim_ratelimit_reset_seconds: Gauge,
    /// Seconds until the limiter's hold on the target ends; set at each scrape.
    pub target_wait_seconds: Gauge,
    pub oauth_token_refreshes_total: IntCounterVec,
    pub pipeline_queue_depth: IntGaugeVec,
    pub webhook_deliveries_total: IntCounterVec,
    pub webhook_outbox_pending: IntGauge,
    pub webhook_outbox_oldest_pending_seconds: IntGauge,
    pub webhook_outbox_dead: IntGauge,
    pub users_awaiting_account: IntGauge,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub policy_reload_errors_total: IntCounter,
    pub policy_valid: IntGauge,
    pub pipeline_restarts_total: IntCounterVec,
    pub jobs: IntGaugeVec,
    pub jobs_paused: IntGaugeVec,
    pub rows_pending: IntGauge,
    pub oldest_unfinished_job_age_seconds: Gauge,
    pub store_up: IntGauge,
    pub reconcile_drifted_users_total: IntCounter,
    pub conflicts_after_write_total: IntCounterVec,
    pub reconcile_schedule_runs_total: IntCounterVec,
    /// The drift feed (pipeline::drift).
    pub drift_polls_total: IntCounterVec,
    pub drift_detected_total: IntCounterVec,
    pub drift_fallback_scans_total: IntCounterVec,
    pub drift_own_changes_ignored_total: IntCounter,
    pub drift_checkpoint_age_seconds: IntGauge,
    pub drift_fallback_backoff_seconds: IntGauge,
    pub pushed_events_total: IntCounterVec,
    /// Failed authentications by reason (`AuthFailure`).
    pub auth_failures_total: IntCounterVec,
    /// When each API key name was last used (Unix seconds); no key material.
    pub auth_key_last_used_seconds: IntGaugeVec,
    /// JWKS reads, by result (`ok`, `error`).
    pub auth_jwks_fetches_total: IntCounterVec,
    pub auth_keys_reload_errors_total: IntCounter,
    /// When the store-derived gauges were last read (`Instant`), and the lock that keeps
    /// concurrent scrapes to one store read.
    store_refreshed: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("rolesync")
}

/// SCIM calls: 5 ms to 30 s (a call's own timeout, `target.timeout_secs`, is 30 s by default).
const SCIM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// HTTP requests: 5 ms to 300 s (an upload of a large batch may take minutes).
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            build_info: IntGaugeVec::new(
                opts(
                    "build_info",
                    "Always 1; the labels tell the version and git commit of this build",
                ),
                &["version", "git_sha"],
            )?,
            jobs_total: IntCounterVec::new(
                opts("jobs_total", "Jobs that reached a final status"),
                &["status"],
            )?,
            assignments_total: IntCounterVec::new(
                opts("assignments_total", "Rows that reached an outcome"),
                &["outcome"],
            )?,
            scim_requests_total: IntCounterVec::new(
                opts(
                    "scim_requests_total",
                    "HTTP requests sent to the SCIM target (every attempt), by answer status",
                ),
                &["method", "route", "status"],
            )?,
            scim_calls_total: IntCounterVec::new(
                opts(
                    "scim_calls_total",
                    "SCIM calls by how they ended after their retries",
                ),
                &["method", "route", "outcome"],
            )?,
            scim_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new("scim_request_duration_seconds", "Latency of SCIM calls")
                    .namespace("rolesync")
                    .buckets(SCIM_BUCKETS.to_vec()),
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
            scim_rate_limit_per_minute: IntGauge::with_opts(opts(
                "scim_rate_limit_per_minute",
                "The pace rolesync keeps to (target.requests_per_minute)",
            ))?,
            scim_ratelimit_allowed: IntGauge::with_opts(opts(
                "scim_ratelimit_allowed",
                "Calls the target allows per window (inin-ratelimit-allowed of the latest answer; 0 until one carried it)",
            ))?,
            scim_ratelimit_remaining: IntGauge::with_opts(opts(
                "scim_ratelimit_remaining",
                "Calls left in the target's window (inin-ratelimit-allowed minus inin-ratelimit-count of the latest answer)",
            ))?,
            scim_ratelimit_reset_seconds: Gauge::with_opts(opts(
                "scim_ratelimit_reset_seconds",
                "Seconds until the target's window reopens (inin-ratelimit-reset of the latest answer, clamped)",
            ))?,
            oauth_token_refreshes_total: IntCounterVec::new(
                opts("oauth_token_refreshes_total", "OAuth token requests"),
                &["result"],
            )?,
            target_wait_seconds: Gauge::with_opts(opts(
                "target_wait_seconds",
                "Seconds until this replica's hold on calls to the target ends (a 429's Retry-After or a spent window's reset, bounded); 0 when calls are not held",
            ))?,
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
            users_awaiting_account: IntGauge::with_opts(opts(
                "users_awaiting_account",
                "Users of unfinished jobs not in the target yet, waiting for their account (sync.await_user_secs)",
            ))?,
            webhook_outbox_dead: IntGauge::with_opts(opts(
                "webhook_outbox_dead",
                "Webhook events whose retries ran out (dead letters), until redelivered or pruned",
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
                .namespace("rolesync")
                .buckets(HTTP_BUCKETS.to_vec()),
                &["method", "route"],
            )?,
            auth_failures_total: IntCounterVec::new(
                opts(
                    "auth_failures_total",
                    "Failed authentications (/v1 and the console), by reason; `limited` counts requests refused 429 because their address failed too often",
                ),
                &["reason"],
            )?,
            auth_key_last_used_seconds: IntGaugeVec::new(
                opts(
                    "auth_key_last_used_timestamp_seconds",
                    "When an API key of this name last authenticated a request (Unix time)",
                ),
                &["key"],
            )?,
            auth_jwks_fetches_total: IntCounterVec::new(
                opts(
                    "auth_jwks_fetches_total",
                    "Reads of an issuer's JWKS (at start, on an unknown kid at most once a minute, hourly), by result",
                ),
                &["result"],
            )?,
            auth_keys_reload_errors_total: IntCounter::with_opts(opts(
                "auth_keys_reload_errors_total",
                "Reloads of auth.keys_file refused (unreadable or invalid); the keys in force stay",
            ))?,
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
            jobs: IntGaugeVec::new(
                opts("jobs", "Jobs in the store by status (read from the store)"),
                &["status"],
            )?,
            jobs_paused: IntGaugeVec::new(
                opts("jobs_paused", "Paused jobs by reason (read from the store)"),
                &["reason"],
            )?,
            rows_pending: IntGauge::with_opts(opts(
                "rows_pending",
                "Rows of all jobs not yet at an outcome (read from the store)",
            ))?,
            oldest_unfinished_job_age_seconds: Gauge::with_opts(opts(
                "oldest_unfinished_job_age_seconds",
                "Seconds since the oldest job not in a final status was created; 0 when there is none",
            ))?,
            store_up: IntGauge::with_opts(opts(
                "store_up",
                "1 when the last read of the store-derived gauges succeeded, 0 when it failed or timed out",
            ))?,
            conflicts_after_write_total: IntCounterVec::new(
                opts(
                    "conflicts_after_write_total",
                    "Users a re-run found in conflict with a write an earlier attempt of its job made (role_sync.conflict_detected), by reason: sod_conflict, changed_since",
                ),
                &["reason"],
            )?,
            reconcile_drifted_users_total: IntCounter::with_opts(opts(
                "reconcile_drifted_users_total",
                "Users a reconcile found drifted (roles not what their desired state implies), fixed or not",
            ))?,
            reconcile_schedule_runs_total: IntCounterVec::new(
                opts(
                    "reconcile_schedule_runs_total",
                    "Occurrences of [reconcile] schedule seen by this replica, by what it did: fired (started the reconcile), taken (another replica claimed it), skipped (a reconcile was running), error",
                ),
                &["result"],
            )?,
            drift_polls_total: IntCounterVec::new(
                opts(
                    "drift_polls_total",
                    "Polls of the drift feed (drift.source = audit) by this replica, by result: ok, fallback, error, lease_lost, reconcile_running",
                ),
                &["result"],
            )?,
            drift_detected_total: IntCounterVec::new(
                opts(
                    "drift_detected_total",
                    "Users the drift feed found drifted by a hand change (role_sync.drift_detected with changed_by), by source: audit (polled), push (POST /v1/events/genesys)",
                ),
                &["source"],
            )?,
            drift_fallback_scans_total: IntCounterVec::new(
                opts(
                    "drift_fallback_scans_total",
                    "Full scans the drift feed started instead of reading the audit trail, by cause: feed_failed, too_many_changes",
                ),
                &["cause"],
            )?,
            drift_own_changes_ignored_total: IntCounter::with_opts(opts(
                "drift_own_changes_ignored_total",
                "Audit messages of role changes made by rolesync's own OAuth client, ignored by the drift feed",
            ))?,
            drift_checkpoint_age_seconds: IntGauge::with_opts(opts(
                "drift_checkpoint_age_seconds",
                "Seconds between now and the drift feed's checkpoint after this replica's last poll (0 before one)",
            ))?,
            drift_fallback_backoff_seconds: IntGauge::with_opts(opts(
                "drift_fallback_backoff_seconds",
                "Seconds the drift feed waits after its last fallback scan before it may start another while the feed keeps failing (doubling from drift.poll_secs x 2 up to drift.fallback_backoff_max_secs; 0 after a successful poll)",
            ))?,
            pushed_events_total: IntCounterVec::new(
                opts(
                    "pushed_events_total",
                    "Events pushed to POST /v1/events/genesys, by result: accepted, duplicate, ignored (not a role change)",
                ),
                &["result"],
            )?,
            store_refreshed: Arc::new(tokio::sync::Mutex::new(None)),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.build_info.clone()))?;
        r.register(Box::new(m.jobs_total.clone()))?;
        r.register(Box::new(m.assignments_total.clone()))?;
        r.register(Box::new(m.conflicts_after_write_total.clone()))?;
        r.register(Box::new(m.scim_requests_total.clone()))?;
        r.register(Box::new(m.scim_calls_total.clone()))?;
        r.register(Box::new(m.scim_request_duration_seconds.clone()))?;
        r.register(Box::new(m.scim_retries_total.clone()))?;
        r.register(Box::new(m.scim_rate_limited_total.clone()))?;
        r.register(Box::new(m.scim_rate_limit_per_minute.clone()))?;
        r.register(Box::new(m.scim_ratelimit_allowed.clone()))?;
        r.register(Box::new(m.scim_ratelimit_remaining.clone()))?;
        r.register(Box::new(m.scim_ratelimit_reset_seconds.clone()))?;
        r.register(Box::new(m.target_wait_seconds.clone()))?;
        r.register(Box::new(m.oauth_token_refreshes_total.clone()))?;
        r.register(Box::new(m.pipeline_queue_depth.clone()))?;
        r.register(Box::new(m.webhook_deliveries_total.clone()))?;
        r.register(Box::new(m.webhook_outbox_pending.clone()))?;
        r.register(Box::new(m.webhook_outbox_oldest_pending_seconds.clone()))?;
        r.register(Box::new(m.webhook_outbox_dead.clone()))?;
        r.register(Box::new(m.users_awaiting_account.clone()))?;
        r.register(Box::new(m.http_requests_total.clone()))?;
        r.register(Box::new(m.http_request_duration_seconds.clone()))?;
        r.register(Box::new(m.policy_reload_errors_total.clone()))?;
        r.register(Box::new(m.auth_failures_total.clone()))?;
        r.register(Box::new(m.auth_key_last_used_seconds.clone()))?;
        r.register(Box::new(m.auth_jwks_fetches_total.clone()))?;
        r.register(Box::new(m.auth_keys_reload_errors_total.clone()))?;
        r.register(Box::new(m.policy_valid.clone()))?;
        r.register(Box::new(m.pipeline_restarts_total.clone()))?;
        r.register(Box::new(m.jobs.clone()))?;
        r.register(Box::new(m.jobs_paused.clone()))?;
        r.register(Box::new(m.rows_pending.clone()))?;
        r.register(Box::new(m.oldest_unfinished_job_age_seconds.clone()))?;
        r.register(Box::new(m.store_up.clone()))?;
        r.register(Box::new(m.reconcile_drifted_users_total.clone()))?;
        r.register(Box::new(m.reconcile_schedule_runs_total.clone()))?;
        r.register(Box::new(m.drift_polls_total.clone()))?;
        r.register(Box::new(m.drift_detected_total.clone()))?;
        r.register(Box::new(m.drift_fallback_scans_total.clone()))?;
        r.register(Box::new(m.drift_own_changes_ignored_total.clone()))?;
        r.register(Box::new(m.drift_checkpoint_age_seconds.clone()))?;
        r.register(Box::new(m.drift_fallback_backoff_seconds.clone()))?;
        r.register(Box::new(m.pushed_events_total.clone()))?;
        // CPU, memory, open file descriptors, threads, start time: `process_*`, unprefixed as
        // every Prometheus client names them. Linux only (read from /proc).
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        m.build_info.with_label_values(&[VERSION, GIT_SHA]).set(1);
        m.policy_valid.set(1);
        // Series of closed label sets exist from the start, at 0: a dashboard shows 0 rather
        // than "no data", and `rate()`/`increase()` see the first increment.
        for status in JobStatus::ALL {
            m.jobs.with_label_values(&[status.as_str()]);
            if status.is_terminal() {
                m.jobs_total.with_label_values(&[status.as_str()]);
            }
        }
        for reason in PausedReason::ALL {
            m.jobs_paused.with_label_values(&[reason.as_str()]);
        }
        for outcome in Outcome::ALL {
            m.assignments_total.with_label_values(&[outcome.as_str()]);
        }
        for reason in ["sod_conflict", "changed_since"] {
            m.conflicts_after_write_total.with_label_values(&[reason]);
        }
        for reason in ScimRetryReason::ALL {
            m.scim_retries_total.with_label_values(&[reason.as_str()]);
        }
        for result in SCHEDULE_RESULTS {
            m.reconcile_schedule_runs_total.with_label_values(&[result]);
        }
        for result in crate::domain::DriftPollResult::ALL {
            m.drift_polls_total.with_label_values(&[result.as_str()]);
        }
        for source in ["audit", "push"] {
            m.drift_detected_total.with_label_values(&[source]);
        }
        for cause in crate::domain::DriftFallback::ALL {
            m.drift_fallback_scans_total
                .with_label_values(&[cause.as_str()]);
        }
        for result in ["accepted", "duplicate", "ignored"] {
            m.pushed_events_total.with_label_values(&[result]);
        }
        for reason in AuthFailure::ALL {
            m.auth_failures_total.with_label_values(&[reason.as_str()]);
        }
        m.auth_failures_total.with_label_values(&["limited"]);
        for result in ["ok", "error"] {
            m.auth_jwks_fetches_total.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Records the target's `inin-ratelimit-*` view from one answer (values already bounded by
    /// `scim::bounds`); an answer without the headers leaves the gauges as they are.
    pub fn observe_ratelimit(
        &self,
        allowed: Option<u64>,
        count: Option<u64>,
        reset: Option<Duration>,
    ) {
        if let (Some(allowed), Some(count)) = (allowed, count) {
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.scim_ratelimit_allowed.set(clamp(allowed));
            self.scim_ratelimit_remaining
                .set(clamp(allowed.saturating_sub(count)));
        }
        if let Some(reset) = reset {
            self.scim_ratelimit_reset_seconds.set(reset.as_secs_f64());
        }
    }

    /// Reads the store-derived gauges with `read`, at most once per `STORE_REFRESH_EVERY` and
    /// one read at a time (a scrape that finds a read under way waits for it and uses its
    /// values), bounded by `STORE_READ_TIMEOUT`. On an error or a time-out the gauges keep their
    /// last values and `rolesync_store_up` is 0.
    pub async fn refresh_store_gauges<F, E>(&self, now_ms: i64, read: impl FnOnce() -> F)
    where
        F: Future<Output = Result<StoreGauges, E>>,
        E: std::fmt::Display,
    {
        let mut last = self.store_refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < STORE_REFRESH_EVERY) {
            return;
        }
        match tokio::time::timeout(STORE_READ_TIMEOUT, read()).await {
            Ok(Ok(g)) => {
                self.set_store_gauges(&g, now_ms);
                self.store_up.set(1);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the store for the metrics gauges");
                self.store_up.set(0);
            }
            Err(_) => {
                tracing::warn!(
                    timeout_secs = STORE_READ_TIMEOUT.as_secs(),
                    "the store did not answer in time for the metrics gauges"
                );
                self.store_up.set(0);
            }
        }
        *last = Some(std::time::Instant::now());
    }

    /// Sets the store-derived gauges from `g`, as of `now_ms`. Every status and reason is set,
    /// to 0 when absent, so a job that left a status leaves no stale count behind.
    pub fn set_store_gauges(&self, g: &StoreGauges, now_ms: i64) {
        let age_secs = |created: i64| (now_ms - created).max(0) as f64 / 1000.0;
        for status in JobStatus::ALL {
            let n = g
                .jobs
                .iter()
                .filter(|j| j.status == *status)
                .map(|j| j.count)
                .sum();
            self.jobs.with_label_values(&[status.as_str()]).set(n);
        }
        for reason in PausedReason::ALL {
            let n = g
                .jobs
                .iter()
                .filter(|j| j.status == JobStatus::Paused && j.paused_reason == Some(*reason))
                .map(|j| j.count)
                .sum();
            self.jobs_paused
                .with_label_values(&[reason.as_str()])
                .set(n);
        }
        self.rows_pending
            .set(g.jobs.iter().map(|j| j.rows_pending).sum());
        let oldest = g
            .jobs
            .iter()
            .filter(|j| !j.status.is_terminal())
            .filter_map(|j| j.oldest_created_ms)
            .min();
        self.oldest_unfinished_job_age_seconds
            .set(oldest.map(age_secs).unwrap_or(0.0));
        self.webhook_outbox_pending.set(g.outbox_pending);
        self.webhook_outbox_oldest_pending_seconds.set(
            g.outbox_oldest_pending_created_ms
                .map(|c| (now_ms - c).max(0) / 1000)
                .unwrap_or(0),
        );
        self.webhook_outbox_dead.set(g.outbox_dead);
        self.users_awaiting_account.set(g.users_awaiting_account);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobGroup;

    fn metrics() -> Metrics {
        Metrics::new().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn store_gauges_set_every_status_and_reason_and_the_oldest_unfinished_age() {
        let m = metrics();
        let group = |status, paused_reason, count, rows_pending, oldest| JobGroup {
            status,
            paused_reason,
            count,
            rows_pending,
            oldest_created_ms: Some(oldest),
        };
        let g = StoreGauges {
            jobs: vec![
                group(JobStatus::Running, None, 2, 30, 50_000),
                group(
                    JobStatus::Paused,
                    Some(PausedReason::TargetUnavailable),
                    1,
                    7,
                    40_000,
                ),
                // A finished job, older than all: not unfinished.
                group(JobStatus::Succeeded, None, 5, 0, 1_000),
            ],
            outbox_pending: 3,
            outbox_oldest_pending_created_ms: Some(95_000),
            outbox_dead: 1,
            users_awaiting_account: 2,
        };
        m.set_store_gauges(&g, 100_000);
        let text = m.render();
        for line in [
            "rolesync_jobs{status=\"running\"} 2",
            "rolesync_jobs{status=\"paused\"} 1",
            "rolesync_jobs{status=\"succeeded\"} 5",
            "rolesync_jobs{status=\"queued\"} 0",
            "rolesync_jobs_paused{reason=\"target_unavailable\"} 1",
            "rolesync_jobs_paused{reason=\"rate_limited\"} 0",
            "rolesync_rows_pending 37",
            "rolesync_oldest_unfinished_job_age_seconds 60",
            "rolesync_webhook_outbox_pending 3",
            "rolesync_webhook_outbox_oldest_pending_seconds 5",
            "rolesync_webhook_outbox_dead 1",
            "rolesync_users_awaiting_account 2",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // A job leaving a status leaves no stale count.
        m.set_store_gauges(&StoreGauges::default(), 100_000);
        let text = m.render();
        assert!(text.contains("rolesync_jobs{status=\"running\"} 0"));
        assert!(text.contains("rolesync_oldest_unfinished_job_age_seconds 0"));
    }

    #[test]
    fn ratelimit_headroom_is_allowed_minus_count_and_never_negative() {
        let m = metrics();
        m.observe_ratelimit(Some(300), Some(120), Some(Duration::from_secs(42)));
        assert_eq!(m.scim_ratelimit_allowed.get(), 300);
        assert_eq!(m.scim_ratelimit_remaining.get(), 180);
        assert_eq!(m.scim_ratelimit_reset_seconds.get(), 42.0);
        m.observe_ratelimit(Some(300), Some(301), None);
        assert_eq!(m.scim_ratelimit_remaining.get(), 0);
        // An answer without the headers changes nothing.
        m.observe_ratelimit(None, None, None);
        assert_eq!(m.scim_ratelimit_allowed.get(), 300);
    }

    #[test]
    fn build_info_and_process_metrics_are_exposed() {
        let text = metrics().render();
        assert!(
            text.contains(&format!(
                "rolesync_build_info{{git_sha=\"{GIT_SHA}\",version=\"{VERSION}\"}} 1"
            )),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
