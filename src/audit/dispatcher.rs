//! Delivers the outbox: claims due deliveries, signs and POSTs them, records the result.
//!
//! A slow or dead receiver never stalls a sync: the sync only writes outbox rows (in the
//! transaction of the outcome they describe); this task is the only one that talks to
//! receivers, each call bounded by `webhooks.timeout_secs`. Each endpoint has at most
//! `webhooks.concurrency_per_endpoint` deliveries in flight, and claims are made per endpoint,
//! so a slow receiver does not hold up the others either.
//!
//! Delivery is at least once: the `webhook-id` is the outbox row's id, stable across retries,
//! redeliveries and restarts, so receivers de-duplicate on it. A claim is a lease: if this
//! process dies mid-delivery, the lease runs out and the delivery is claimed again.

use super::events;
use super::signature;
use crate::configuration::WebhookSettings;
use crate::domain::WebhookSecret;
use crate::metrics::Metrics;
use crate::store::{DeliveryResult, OutboxRecord, Store, now_ms};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest `Retry-After` a webhook receiver may ask for.
const RECEIVER_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub struct Endpoint {
    pub url: String,
    /// The current secret first, then those being rotated out.
    pub keys: Vec<Vec<u8>>,
}

/// What the delivery tasks share.
struct Shared {
    store: Store,
    http: reqwest::Client,
    endpoints: HashMap<String, Endpoint>,
    schedule: Vec<u64>,
    metrics: Metrics,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    /// Endpoint names in configuration order.
    names: Vec<String>,
    batch_max_events: usize,
    per_endpoint: usize,
    lease_ms: i64,
    wake: Arc<Notify>,
}

/// How long deliveries in flight at shutdown may finish before they are dropped (and sent
/// again by the next start: their lease is given back).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The longest a receiver's `Retry-After` may push the next attempt back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

impl Dispatcher {
    pub fn new(
        store: Store,
        settings: &WebhookSettings,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Dispatcher> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            .connect_timeout(Duration::from_secs(settings.timeout_secs.min(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut endpoints = HashMap::new();
        let mut names = Vec::new();
        for e in &settings.endpoints {
            let name = e.display_name();
            let mut keys = Vec::new();
            for secret in e.secret.iter().chain(e.previous_secrets.iter()) {
                let key = WebhookSecret::parse(secret.expose_secret()).ok_or_else(|| {
                    anyhow::anyhow!("webhook endpoint {name}: a secret is not `whsec_<base64>`")
                })?;
                keys.push(key.key().to_vec());
            }
            if keys.is_empty() {
                anyhow::bail!("webhook endpoint {name}: no secret");
            }
            names.push(name.clone());
            endpoints.insert(
                name,
                Endpoint {
                    url: e.url.clone(),
                    keys,
                },
            );
        }
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                store,
                http,
                endpoints,
                schedule: settings.retry_schedule_secs.clone(),
                metrics,
            }),
            names,
            batch_max_events: settings.batch_max_events.max(1),
            per_endpoint: settings.concurrency_per_endpoint.max(1),
            // Longer than any attempt can take, so a live delivery is never claimed twice.
            // Long enough for one delivery that times out, short enough that the deliveries of a
            // dispatcher that died are sent again within about a minute.
            lease_ms: (settings.timeout_secs as i64 * 2 + 10) * 1000,
            wake,
        })
    }

    /// Runs until `shutdown`. Deliveries still in flight then get `SHUTDOWN_GRACE` to finish;
    /// the others are dropped and their leases given back, so they are sent after restart.
    pub async fn run(self, shutdown: CancellationToken) {
        self.warn_unconfigured().await;
        let mut tasks: JoinSet<()> = JoinSet::new();
        // (event id, endpoint) of every delivery in flight, by task: a task that panicked
        // frees its slot like one that finished.
        let mut flying: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        // The backlog gauges are read from the store at scrape time (`GET /metrics`).
        loop {
            for name in &self.names {
                let busy = per_endpoint.get(name).copied().unwrap_or(0);
                let free = self.per_endpoint.saturating_sub(busy);
                if free == 0 {
                    continue;
                }
                for d in self.claim(name, free).await {
                    let key = (d.event_id.clone(), d.endpoint.clone());
                    *per_endpoint.entry(name.clone()).or_default() += 1;
                    let shared = self.shared.clone();
                    let span = delivery_span(&d);
                    let handle =
                        tasks.spawn(async move { shared.deliver(d).await }.instrument(span));
                    flying.insert(handle.id(), key);
                }
            }
            let mut finished = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => finished.push(done),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            // Everything else that finished meanwhile, so the next claims are made together.
            while let Some(done) = tasks.try_join_next_with_id() {
                finished.push(done);
            }
            for done in finished {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "a webhook delivery task failed; its lease runs out and it is sent again");
                        e.id()
                    }
                };
                if let Some((_, endpoint)) = flying.remove(&id)
                    && let Some(n) = per_endpoint.get_mut(&endpoint)
                {
                    *n = n.saturating_sub(1);
                }
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = tasks.join_next_with_id().await {
                if let Ok((id, ())) = done {
                    flying.remove(&id);
                }
            }
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            let keys: Vec<(String, String)> = flying.into_values().collect();
            tracing::info!(
                webhook.deliveries = keys.len(),
                "webhook deliveries still in flight at shutdown; they are sent again after restart"
            );
            if let Err(e) = self.shared.store.release_deliveries(&keys).await {
                tracing::warn!(error = %e, "cannot release webhook deliveries; their leases run out by themselves");
            }
        }
    }

    /// Up to `free` due deliveries of one endpoint, batching fresh events first when on.
    async fn claim(&self, endpoint: &str, free: usize) -> Vec<OutboxRecord> {
        let batching = self.batch_max_events > 1;
        if batching {
            for _ in 0..free {
                let batch_id = events::new_message_id();
                let formed = self
                    .shared
                    .store
                    .form_batch(
                        endpoint,
                        self.batch_max_events as i64,
                        &batch_id,
                        |members| {
                            let parts: Vec<(&str, &str)> = members
                                .iter()
                                .map(|m| (m.event_id.as_str(), m.payload.as_str()))
                                .collect();
                            events::batch_body(&parts)
                        },
                    )
                    .await;
                match formed {
                    Ok(n) if n < self.batch_max_events => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(webhook.endpoint = %endpoint, error = %e, "cannot batch webhook events");
                        break;
                    }
                }
            }
        }
        match self
            .shared
            .store
            .claim_due_deliveries(endpoint, free as i64, self.lease_ms, batching)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(webhook.endpoint = %endpoint, error = %e, "cannot read the webhook outbox");
                Vec::new()
            }
        }
    }

    /// Deliveries to an endpoint no longer configured stay pending (the endpoint may come
    /// back, e.g. a replica with an older configuration): say so once at start.
    async fn warn_unconfigured(&self) {
        if let Ok(pending) = self.shared.store.pending_by_endpoint().await {
            for (endpoint, n) in pending {
                if !self.shared.endpoints.contains_key(&endpoint) {
                    tracing::warn!(webhook.endpoint = %endpoint, webhook.pending = n, "webhook deliveries wait for an endpoint that is not configured");
                }
            }
        }
    }
}

/// `webhook`: one delivery attempt, a child of the span the event was made in (its job's
/// chunk or planning, or the request that submitted it) when traces were on then.
fn delivery_span(d: &OutboxRecord) -> tracing::Span {
    let span = tracing::info_span!(
        "webhook",
        otel.name = %format!("POST webhook {}", d.event_type),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        webhook.id = %d.event_id,
        webhook.endpoint = %d.endpoint,
        webhook.type = %d.event_type,
        webhook.attempt = d.attempts + 1,
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::set_parent(&span, d.traceparent.as_deref());
    span
}

impl Shared {
    /// One attempt, recorded in the outbox.
    async fn deliver(&self, d: OutboxRecord) {
        let Some(ep) = self.endpoints.get(&d.endpoint) else {
            // Claims are made per configured endpoint: not reached.
            return;
        };
        let started = std::time::Instant::now();
        let result = self.post(ep, &d).await;
        let label = match &result {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retry { .. } => "retry",
            DeliveryResult::Dead { .. } => "dead",
        };
        self.metrics
            .webhook_deliveries_total
            .with_label_values(&[label])
            .inc();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            DeliveryResult::Delivered => {
                tracing::debug!(webhook.id = %d.event_id, webhook.endpoint = %d.endpoint, webhook.type = %d.event_type, duration_ms = elapsed_ms, "webhook delivered")
            }
            DeliveryResult::Retry {
                error,
                next_attempt_at_ms,
            } => {
                tracing::info!(webhook.id = %d.event_id, webhook.endpoint = %d.endpoint, webhook.attempt = d.attempts + 1, webhook.retry_in_ms = next_attempt_at_ms - now_ms(), duration_ms = elapsed_ms, error = %error, "webhook delivery failed; retrying")
            }
            DeliveryResult::Dead { error } => {
                tracing::warn!(webhook.id = %d.event_id, webhook.endpoint = %d.endpoint, webhook.attempt = d.attempts + 1, duration_ms = elapsed_ms, error = %error, "webhook delivery is dead")
            }
        }
        if let Err(e) = self
            .store
            .mark_delivery(&d.event_id, &d.endpoint, &result)
            .await
        {
            // The lease runs out and the delivery is sent again: at least once, never lost.
            tracing::warn!(webhook.id = %d.event_id, webhook.endpoint = %d.endpoint, error = %e, "cannot record a webhook delivery");
        }
    }

    async fn post(&self, ep: &Endpoint, d: &OutboxRecord) -> DeliveryResult {
        // A fresh timestamp per attempt: receivers refuse old ones (replay protection).
        let timestamp = now_ms() / 1000;
        let sig = signature::sign_all(&ep.keys, &d.event_id, timestamp, &d.payload);
        let sent = self
            .http
            .post(&ep.url)
            // `traceparent` of the delivery's span, when traces are on.
            .headers(crate::telemetry::trace_headers())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(d.payload.clone())
            .send()
            .await;
        let (verdict, error, retry_after) = match sent {
            Ok(resp) => {
                let status = resp.status();
                let span = tracing::Span::current();
                span.record("http.response.status_code", status.as_u16());
                if !status.is_success() {
                    span.record("otel.status_code", "ERROR");
                }
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    // A receiver may ask for at most an hour; its schedule does the rest.
                    .and_then(|v| {
                        crate::scim::retry::parse_retry_after(
                            v,
                            crate::scim::bounds::WaitBounds {
                                window: RECEIVER_MAX_RETRY_AFTER,
                                max: RECEIVER_MAX_RETRY_AFTER,
                            },
                        )
                    });
                (
                    classify(status.as_u16()),
                    format!("receiver answered {status}"),
                    retry_after,
                )
            }
            // Connection refused, reset, timeout: the receiver may be back later. The URL is
            // left out of the message: it may carry a token.
            Err(e) => (
                Verdict::Retry,
                format!("cannot reach the receiver: {}", e.without_url()),
                None,
            ),
        };
        match verdict {
            Verdict::Delivered => DeliveryResult::Delivered,
            Verdict::Dead => DeliveryResult::Dead { error },
            Verdict::Retry => match self.schedule.get(d.attempts.max(0) as usize) {
                Some(delay) => {
                    let mut wait = jittered(*delay);
                    if let Some(ra) = retry_after {
                        wait = wait.max(ra.min(MAX_RETRY_AFTER).as_millis() as u64);
                    }
                    DeliveryResult::Retry {
                        next_attempt_at_ms: now_ms() + wait as i64,
                        error,
                    }
                }
                None => DeliveryResult::Dead {
                    error: format!("{error}; no attempts left"),
                },
            },
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry,
    Dead,
}

/// 2xx delivered; 408, 429 and 5xx may pass: retried; anything else (other 4xx, and 3xx since
/// redirects are not followed) will not pass by trying again: dead at once, for ops to look at
/// and redeliver.
fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Dead,
    }
}

/// The scheduled delay in milliseconds, ±20 % so that retries after an outage spread out.
fn jittered(secs: u64) -> u64 {
    use rand::Rng;
    let ms = secs.saturating_mul(1000);
    let spread = ms / 5;
    ms - spread + rand::rng().random_range(0..=spread * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_may_pass_later() {
        assert_eq!(classify(200), Verdict::Delivered);
        assert_eq!(classify(204), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(classify(s), Verdict::Dead, "{s}");
        }
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..1000 {
            let ms = jittered(10);
            assert!((8_000..=12_000).contains(&ms), "{ms}");
        }
        assert_eq!(jittered(0), 0);
    }
}
