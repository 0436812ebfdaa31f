//! Delivers the outbox: claims due deliveries, signs and POSTs them, records the result.
//!
//! A slow or dead receiver never stalls a sync: the sync only writes outbox rows; this task is
//! the only one that talks to receivers, each call bounded by a timeout. Delivery is at least
//! once: the `webhook-id` is the outbox event id, stable across retries and restarts, so
//! receivers de-duplicate on it.

use super::signature;
use crate::configuration::WebhookSettings;
use crate::metrics::Metrics;
use crate::store::{DeliveryResult, OutboxRecord, Store, now_ms};
use futures::StreamExt;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Deliveries claimed at once, and sent at once.
const CLAIM: usize = 16;
const CONCURRENCY: usize = 8;

pub struct Endpoint {
    pub url: String,
    pub key: Vec<u8>,
}

pub struct Dispatcher {
    store: Store,
    http: reqwest::Client,
    endpoints: HashMap<String, Endpoint>,
    schedule: Vec<u64>,
    metrics: Metrics,
    wake: Arc<Notify>,
    timeout_secs: u64,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        settings: &WebhookSettings,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Dispatcher> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut endpoints = HashMap::new();
        for e in &settings.endpoints {
            let key = e
                .secret
                .as_ref()
                .and_then(|s| signature::decode_secret(s.expose_secret()))
                .ok_or_else(|| {
                    anyhow::anyhow!("webhook endpoint {}: invalid secret", e.display_name())
                })?;
            endpoints.insert(
                e.display_name(),
                Endpoint {
                    url: e.url.clone(),
                    key,
                },
            );
        }
        Ok(Dispatcher {
            store,
            http,
            endpoints,
            schedule: settings.retry_schedule_secs.clone(),
            metrics,
            wake,
            timeout_secs: settings.timeout_secs,
        })
    }

    /// Runs until `shutdown`; a delivery in flight at that moment is retried after restart.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_gauge = 0i64;
        loop {
            let now = now_ms();
            if now - last_gauge > 2_000 {
                last_gauge = now;
                if let Ok((pending, oldest)) = self.store.outbox_backlog().await {
                    self.metrics.webhook_outbox_pending.set(pending);
                    self.metrics
                        .webhook_outbox_oldest_pending_seconds
                        .set(oldest.map(|o| (now - o).max(0) / 1000).unwrap_or(0));
                }
            }
            // The lease covers one claimed batch at worst (every call timing out), so that a
            // dispatcher that died mid-batch holds its deliveries for about that long only.
            let lease_ms =
                (self.timeout_secs * CLAIM.div_ceil(CONCURRENCY) as u64 + 5) as i64 * 1000;
            let due = match self
                .store
                .claim_due_deliveries(CLAIM as i64, lease_ms)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook outbox");
                    Vec::new()
                }
            };
            let idle = due.is_empty();
            futures::stream::iter(due)
                .map(|d| self.deliver(d))
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<()>>()
                .await;
            if idle {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    async fn deliver(&self, d: OutboxRecord) {
        let result = match self.endpoints.get(&d.endpoint) {
            None => DeliveryResult::Dead {
                error: format!("endpoint {} is no longer configured", d.endpoint),
            },
            Some(ep) => self.post(ep, &d).await,
        };
        let label = match &result {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retry { .. } => "retry",
            DeliveryResult::Dead { .. } => "dead",
        };
        self.metrics
            .webhook_deliveries_total
            .with_label_values(&[label])
            .inc();
        if let DeliveryResult::Dead { error } = &result {
            tracing::warn!(webhook.id = %d.event_id, webhook.endpoint = %d.endpoint, error = %error, "webhook delivery is dead");
        }
        if let Err(e) = self
            .store
            .mark_delivery(&d.event_id, &d.endpoint, &result)
            .await
        {
            // The lease expires and the delivery is retried: at least once, never lost.
            tracing::warn!(webhook.id = %d.event_id, error = %e, "cannot record a webhook delivery");
        }
    }

    async fn post(&self, ep: &Endpoint, d: &OutboxRecord) -> DeliveryResult {
        let timestamp = now_ms() / 1000;
        let sig = signature::sign(&ep.key, &d.event_id, timestamp, &d.payload);
        let sent = self
            .http
            .post(&ep.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(d.payload.clone())
            .send()
            .await;
        let (retryable, error) = match sent {
            Ok(resp) if resp.status().is_success() => return DeliveryResult::Delivered,
            Ok(resp) => {
                let s = resp.status();
                let retryable = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
                (retryable, format!("receiver answered {s}"))
            }
            Err(e) => (
                true,
                format!("cannot reach the receiver: {}", e.without_url()),
            ),
        };
        let attempt = d.attempts as usize;
        match (retryable, self.schedule.get(attempt)) {
            (true, Some(delay)) => DeliveryResult::Retry {
                next_attempt_at_ms: now_ms() + jittered(*delay) as i64,
                error,
            },
            _ => DeliveryResult::Dead { error },
        }
    }
}

/// The scheduled delay in milliseconds, ±20 % so that retries after an outage spread out.
fn jittered(secs: u64) -> u64 {
    use rand::Rng;
    let ms = secs * 1000;
    let spread = ms / 5;
    ms - spread + rand::rng().random_range(0..=spread * 2)
}
