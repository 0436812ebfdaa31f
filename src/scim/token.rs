//! Access tokens: client-credentials OAuth (Genesys `POST /oauth/token`, HTTP Basic) or a static
//! bearer token.
//!
//! Invariant: at most one token request is in flight, however many workers ask. The cached token
//! sits behind an async mutex that is held across the refresh, so callers that arrive during a
//! refresh wait for it and then share its result.

use super::ScimError;
use super::retry::backoff;
use crate::metrics::Metrics;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub enum TokenSource {
    Static(SecretString),
    ClientCredentials(Box<TokenManager>),
}

impl TokenSource {
    /// A token that is valid for at least the refresh margin.
    pub async fn token(&self) -> Result<SecretString, ScimError> {
        match self {
            TokenSource::Static(t) => Ok(t.clone()),
            TokenSource::ClientCredentials(m) => m.token().await,
        }
    }

    /// Forgets `rejected` if it is still the cached token (a 401 answered it).
    pub async fn invalidate(&self, rejected: &SecretString) {
        if let TokenSource::ClientCredentials(m) = self {
            m.invalidate(rejected).await;
        }
    }

    pub fn can_refresh(&self) -> bool {
        matches!(self, TokenSource::ClientCredentials(_))
    }
}

pub struct TokenManager {
    http: reqwest::Client,
    url: String,
    client_id: String,
    client_secret: SecretString,
    cached: Mutex<Option<Cached>>,
    metrics: Metrics,
    /// Bound on the retries of a token endpoint that is down.
    max_wait: Duration,
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Any JSON value: read by `bounds::token_ttl`, never trusted as it is.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenManager {
    pub fn new(
        http: reqwest::Client,
        url: String,
        client_id: String,
        client_secret: SecretString,
        metrics: Metrics,
        max_wait: Duration,
    ) -> TokenManager {
        TokenManager {
            http,
            url,
            client_id,
            client_secret,
            cached: Mutex::new(None),
            metrics,
            max_wait,
        }
    }

    pub async fn token(&self) -> Result<SecretString, ScimError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch_with_retries().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    pub async fn invalidate(&self, rejected: &SecretString) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == rejected.expose_secret())
        {
            *cached = None;
        }
    }

    /// A token endpoint that is down (5xx, 429, connection errors) is retried with backoff up
    /// to `max_wait`; refused credentials fail at once.
    async fn fetch_with_retries(&self) -> Result<Cached, ScimError> {
        let deadline = Instant::now() + self.max_wait;
        let mut attempt = 0u32;
        loop {
            match self.fetch().await {
                Ok(c) => {
                    self.metrics
                        .oauth_token_refreshes_total
                        .with_label_values(&["success"])
                        .inc();
                    return Ok(c);
                }
                Err(FetchError::Refused(detail)) => {
                    self.metrics
                        .oauth_token_refreshes_total
                        .with_label_values(&["refused"])
                        .inc();
                    tracing::error!(detail = %detail, "the token endpoint refused the client credentials");
                    return Err(ScimError::AuthFailed { detail });
                }
                Err(FetchError::Transient(detail, retry_after)) => {
                    self.metrics
                        .oauth_token_refreshes_total
                        .with_label_values(&["error"])
                        .inc();
                    let delay = retry_after.unwrap_or_else(|| {
                        backoff(attempt, Duration::from_millis(200), Duration::from_secs(30))
                    });
                    attempt += 1;
                    if Instant::now() + delay > deadline {
                        return Err(ScimError::Unavailable {
                            detail: format!("token endpoint: {detail}"),
                        });
                    }
                    tracing::warn!(detail = %detail, retry_in_ms = delay.as_millis() as u64, "token request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Cached, FetchError> {
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| FetchError::Transient(e.without_url().to_string(), None))?;
        let status = resp.status();
        if status.is_success() {
            let body: TokenResponse = resp.json().await.map_err(|e| {
                FetchError::Transient(
                    format!("unreadable token response: {}", e.without_url()),
                    None,
                )
            })?;
            let ttl = super::bounds::token_ttl(body.expires_in.as_ref());
            // Refresh ahead of expiry: a minute early, or at 90% of a short lifetime.
            let margin = Duration::from_secs(60).min(ttl / 10);
            return Ok(Cached {
                token: SecretString::from(body.access_token),
                refresh_at: Instant::now() + ttl - margin,
            });
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            // The login service's own rate limit: Genesys' one-minute window, at most 120 s.
            .and_then(|v| super::retry::parse_retry_after(v, super::bounds::WaitBounds::DEFAULT));
        let body = resp.bytes().await.unwrap_or_default();
        let detail = format!("{status}: {}", super::model::ErrorBody::parse(&body).text());
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Err(FetchError::Transient(detail, retry_after))
        } else {
            Err(FetchError::Refused(detail))
        }
    }
}

enum FetchError {
    Refused(String),
    Transient(String, Option<Duration>),
}
