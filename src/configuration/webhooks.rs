//! `[webhooks]`: where rolesync's audit events go.

use super::check_url;
use super::{ConfigError, Settings, invalid};
use crate::domain::{EventType, WebhookSecret};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    #[serde(default)]
    pub endpoints: Vec<WebhookEndpointSettings>,
    /// Delay before each retry, in seconds; its length bounds the attempts.
    #[serde(default = "default_schedule")]
    pub retry_schedule_secs: Vec<u64>,
    /// Bound of one delivery (connect, send, answer); a slower receiver counts as failed.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// Events per POST. 1 (the default) sends each event alone; above 1 every POST is a batch
    /// `{"type":"batch","timestamp":…,"events":[…]}` with its own `webhook-id`.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Deliveries in flight at once per endpoint, so one slow receiver cannot hold up another.
    #[serde(default = "default_concurrency_per_endpoint")]
    pub concurrency_per_endpoint: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            endpoints: Vec::new(),
            retry_schedule_secs: default_schedule(),
            timeout_secs: default_webhook_timeout(),
            batch_max_events: default_batch_max_events(),
            concurrency_per_endpoint: default_concurrency_per_endpoint(),
        }
    }
}

fn default_batch_max_events() -> usize {
    1
}

fn default_concurrency_per_endpoint() -> usize {
    4
}

fn default_schedule() -> Vec<u64> {
    vec![5, 30, 120, 600, 1800, 3600, 7200, 14400]
}

fn default_webhook_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointSettings {
    pub name: Option<String>,
    pub url: String,
    /// The signing secret, `whsec_<base64>`.
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    /// Secrets being rotated out: each delivery carries one signature per secret (the current
    /// one first), space-separated, so receivers verify with either during the rotation.
    #[serde(default)]
    pub previous_secrets: Vec<SecretString>,
    /// Event types sent to this endpoint; all when empty.
    #[serde(default)]
    pub events: Vec<EventType>,
}

impl WebhookEndpointSettings {
    /// The endpoint's key in the outbox, in logs and in the deliveries API: `name`, else the
    /// URL without credentials, query or fragment (which may carry a token).
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match reqwest::Url::parse(&self.url) {
            // Nothing to hide: the URL as written (the key rows were stored under before).
            Ok(u)
                if u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none() =>
            {
                self.url.clone()
            }
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
            Err(_) => "unnamed".to_owned(),
        }
    }
}

impl Settings {
    /// `webhooks.*`: endpoints with a `whsec_` secret and distinct names, and delivery bounds.
    pub(super) fn check_webhooks(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for ep in &self.webhooks.endpoints {
            check_url("webhooks.endpoints.url", &ep.url)?;
            let name = ep.display_name();
            match &ep.secret {
                Some(s) if WebhookSecret::parse(s.expose_secret()).is_some() => {}
                _ => {
                    return Err(invalid(
                        "webhooks.endpoints.secret",
                        format!("endpoint {name}: a secret `whsec_<base64>` is required"),
                    ));
                }
            }
            for (i, s) in ep.previous_secrets.iter().enumerate() {
                if WebhookSecret::parse(s.expose_secret()).is_none() {
                    return Err(invalid(
                        "webhooks.endpoints.previous_secrets",
                        format!("endpoint {name}: entry {i} is not a secret `whsec_<base64>`"),
                    ));
                }
            }
            // Deliveries are keyed by endpoint name: two endpoints with one name would share
            // (and steal) each other's deliveries.
            if !names.insert(name.clone()) {
                return Err(invalid(
                    "webhooks.endpoints.name",
                    format!("two endpoints are named {name}; give each a distinct `name`"),
                ));
            }
        }
        if self.webhooks.retry_schedule_secs.len() > 50 {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "at most 50 retries",
            ));
        }
        if self
            .webhooks
            .retry_schedule_secs
            .iter()
            .any(|s| *s == 0 || *s > 7 * 86_400)
        {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "each delay must be between 1 s and 7 days",
            ));
        }
        if !(1..=300).contains(&self.webhooks.timeout_secs) {
            return Err(invalid(
                "webhooks.timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=1000).contains(&self.webhooks.batch_max_events) {
            return Err(invalid(
                "webhooks.batch_max_events",
                "must be between 1 (no batching) and 1000",
            ));
        }
        if !(1..=64).contains(&self.webhooks.concurrency_per_endpoint) {
            return Err(invalid(
                "webhooks.concurrency_per_endpoint",
                "must be between 1 and 64",
            ));
        }
        Ok(())
    }
}
