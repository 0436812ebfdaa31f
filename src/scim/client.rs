//! The calls rolesync makes to the SCIM target, each paced, retried, counted and timed.

use super::ScimError;
use super::bounds::{self, WaitBounds};
use super::model::{ErrorBody, ListResponse, PATCH_OP_SCHEMA, ScimUser, escape_filter_value};
use super::rate::RateLimiter;
use super::retry::{Verdict, backoff, classify, parse_retry_after};
use super::tally::CallTally;
use super::token::{TokenManager, TokenSource};
use crate::configuration::Settings;
use crate::domain::{ScimCallOutcome, ScimRetryReason};
use crate::metrics::Metrics;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

mod audits;
mod catalog;
pub use audits::{QueryState, SERVICE as AUDIT_SERVICE, interval as audit_interval};
pub use catalog::{AuthzCatalog, RoleCatalog};

pub struct ScimClient {
    /// The Authorization catalog, fetched on first use and kept `AUTHZ_CATALOG_TTL`.
    authz_catalog: tokio::sync::Mutex<Option<(Instant, std::sync::Arc<AuthzCatalog>)>>,
    /// The org's role catalog, kept `AUTHZ_CATALOG_TTL`; readable without waiting (the console).
    role_catalog: std::sync::Mutex<Option<(Instant, std::sync::Arc<RoleCatalog>)>>,
    /// Held while the role catalog is fetched, so that callers arriving meanwhile wait for that
    /// one read instead of making their own.
    role_catalog_fetch: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    base: String,
    api_base: String,
    tokens: TokenSource,
    limiter: RateLimiter,
    metrics: Metrics,
    /// Bounds calls in flight (`target.max_concurrency`).
    inflight: Semaphore,
    max_attempts: u32,
    max_retry: Duration,
    /// Bounds of a wait the target asks for (`target.rate_limit_window_secs`,
    /// `target.max_server_delay_secs`).
    wait_bounds: WaitBounds,
    /// How long one call may take (`target.timeout_secs`).
    timeout: Duration,
}

struct Call<'a> {
    method: Method,
    /// Path pattern for metrics, e.g. `/users/{id}`.
    route: &'static str,
    url: String,
    query: &'a [(&'a str, String)],
    body: Option<serde_json::Value>,
    if_match: Option<String>,
}

/// Content type of SCIM bodies; the Platform API (Authorization) takes plain JSON.
const SCIM_JSON: &str = "application/scim+json";
const PLAIN_JSON: &str = "application/json";

impl Call<'_> {
    fn content_type(&self) -> &'static str {
        if self.route.starts_with("/authorization/") || self.route.starts_with("/audits/") {
            PLAIN_JSON
        } else {
            SCIM_JSON
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl ScimClient {
    pub fn from_settings(settings: &Settings, metrics: Metrics) -> anyhow::Result<ScimClient> {
        let t = &settings.target;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(t.timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(t.max_concurrency.max(4))
            .user_agent(concat!("rolesync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tokens = match (
            &t.bearer_token,
            &t.client_id,
            &t.client_secret,
            &t.token_url,
        ) {
            (Some(tok), _, _, _) => TokenSource::Static(tok.clone()),
            (None, Some(id), Some(secret), Some(url)) => {
                TokenSource::ClientCredentials(Box::new(TokenManager::new(
                    http.clone(),
                    url.clone(),
                    id.clone(),
                    secret.clone(),
                    metrics.clone(),
                    Duration::from_secs(t.max_retry_secs),
                )))
            }
            _ => anyhow::bail!("target: no credentials configured"),
        };
        metrics
            .scim_rate_limit_per_minute
            .set(i64::from(t.requests_per_minute));
        Ok(ScimClient {
            authz_catalog: tokio::sync::Mutex::new(None),
            role_catalog: std::sync::Mutex::new(None),
            role_catalog_fetch: tokio::sync::Mutex::new(()),
            http,
            base: t.scim_base.trim_end_matches('/').to_owned(),
            api_base: settings.api_base(),
            tokens,
            limiter: RateLimiter::new(t.requests_per_minute),
            metrics,
            inflight: Semaphore::new(t.max_concurrency),
            max_attempts: t.max_attempts,
            max_retry: Duration::from_secs(t.max_retry_secs),
            wait_bounds: WaitBounds {
                window: Duration::from_secs(t.rate_limit_window_secs),
                max: Duration::from_secs(t.max_server_delay_secs),
            },
            timeout: Duration::from_secs(t.timeout_secs),
        })
    }

    /// How long the limiter still holds every call to the target (a 429's `Retry-After`, a spent
    /// window's reset); `None` when it does not. This process's view only: each replica has its
    /// own limiter.
    pub fn hold_left(&self) -> Option<Duration> {
        self.limiter.hold_left()
    }

    /// `hold_left`, for a hold long enough to show on jobs (`rate::VISIBLE_HOLD`).
    pub fn visible_hold_left(&self) -> Option<Duration> {
        self.limiter.visible_hold_left()
    }

    /// Seconds between two calls at the configured rate.
    pub fn call_interval(&self) -> Duration {
        self.limiter.interval()
    }

    /// Users whose `externalId` equals `external_id` exactly (the value is escaped).
    pub async fn find_by_external_id(
        &self,
        external_id: &str,
        tally: &CallTally,
    ) -> Result<Vec<ScimUser>, ScimError> {
        let filter = format!("externalId eq \"{}\"", escape_filter_value(external_id));
        let query = [
            ("filter", filter),
            ("attributes", "id,userName,externalId,roles,meta".to_owned()),
        ];
        let a = self
            .get("/users", format!("{}/users", self.base), &query, tally)
            .await?;
        let list: ListResponse = parse(&a.body)?;
        // The filter is exact; anything else the target returned is not this user.
        Ok(list
            .resources
            .into_iter()
            .filter(|u| u.external_id.as_deref() == Some(external_id))
            .collect())
    }

    pub async fn get_user(&self, id: &str, tally: &CallTally) -> Result<ScimUser, ScimError> {
        let query = [("attributes", "id,userName,externalId,roles,meta".to_owned())];
        let a = self
            .get(
                "/users/{id}",
                format!("{}/users/{}", self.base, path_segment(id)),
                &query,
                tally,
            )
            .await?;
        let mut user: ScimUser = parse(&a.body)?;
        user.etag = etag(&a.headers);
        Ok(user)
    }

    /// Replaces the user's roles with `roles`, guarded by `If-Match`. Returns the new ETag when
    /// the target tells it.
    pub async fn patch_roles(
        &self,
        id: &str,
        version: &str,
        roles: &[String],
        tally: &CallTally,
    ) -> Result<Option<String>, ScimError> {
        let body = json!({
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [{
                "op": "replace",
                "path": "roles",
                "value": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
            }],
        });
        let a = self
            .call(
                Call {
                    method: Method::PATCH,
                    route: "/users/{id}",
                    url: format!("{}/users/{}", self.base, path_segment(id)),
                    query: &[],
                    body: Some(body),
                    // Required: a PATCH never goes out without `If-Match`.
                    if_match: Some(version.to_owned()),
                },
                tally,
            )
            .await?;
        Ok(etag(&a.headers))
    }

    /// `totalResults` of the whole directory, for one call (`count=0`).
    pub async fn count_users(&self, tally: &CallTally) -> Result<u64, ScimError> {
        let query = [("count", "0".to_owned())];
        let a = self
            .get("/users", format!("{}/users", self.base), &query, tally)
            .await?;
        Ok(parse::<ListResponse>(&a.body)?.total_results)
    }

    /// One page of the directory with only what the sync needs (`startIndex` is 1-based).
    pub async fn list_users(
        &self,
        start_index: u64,
        count: u64,
        tally: &CallTally,
    ) -> Result<ListResponse, ScimError> {
        let query = [
            ("startIndex", start_index.to_string()),
            ("count", count.to_string()),
            ("attributes", "id,externalId,roles,meta.version".to_owned()),
        ];
        let a = self
            .get("/users", format!("{}/users", self.base), &query, tally)
            .await?;
        parse(&a.body)
    }

    /// `filter.maxResults` of `ServiceProviderConfig`, the largest page the target allows.
    pub async fn max_page_size(&self, tally: &CallTally) -> Result<Option<u64>, ScimError> {
        let a = self
            .get(
                "/serviceproviderconfig",
                format!("{}/serviceproviderconfig", self.base),
                &[],
                tally,
            )
            .await?;
        let v: serde_json::Value = parse(&a.body)?;
        Ok(v.pointer("/filter/maxResults")
            .and_then(serde_json::Value::as_u64))
    }

    /// Grants one role to many users in one division, in one call
    /// (`POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER`, 204). The target takes
    /// or refuses the batch whole; no `If-Match` exists for it (docs/bulk-grants.md).
    pub async fn grant_role(
        &self,
        role_id: &str,
        division_id: &str,
        user_ids: &[&str],
        tally: &CallTally,
    ) -> Result<(), ScimError> {
        let query = [("subjectType", "PC_USER".to_owned())];
        self.call(
            Call {
                method: Method::POST,
                route: "/authorization/roles/{roleId}",
                url: format!(
                    "{}/api/v2/authorization/roles/{}",
                    self.api_base,
                    path_segment(role_id)
                ),
                query: &query,
                body: Some(json!({"subjectIds": user_ids, "divisionIds": [division_id]})),
                if_match: None,
            },
            tally,
        )
        .await?;
        Ok(())
    }

    /// Takes one role from many users, in one call
    /// (`PUT /api/v2/authorization/roles/{roleId}/users/remove`).
    pub async fn remove_role(
        &self,
        role_id: &str,
        user_ids: &[&str],
        tally: &CallTally,
    ) -> Result<(), ScimError> {
        self.call(
            Call {
                method: Method::PUT,
                route: "/authorization/roles/{roleId}/users/remove",
                url: format!(
                    "{}/api/v2/authorization/roles/{}/users/remove",
                    self.api_base,
                    path_segment(role_id)
                ),
                query: &[],
                body: Some(json!(user_ids)),
                if_match: None,
            },
            tally,
        )
        .await?;
        Ok(())
    }

    /// A GET without body or precondition.
    async fn get(
        &self,
        route: &'static str,
        url: String,
        query: &[(&str, String)],
        tally: &CallTally,
    ) -> Result<Answer, ScimError> {
        self.call(
            Call {
                method: Method::GET,
                route,
                url,
                query,
                body: None,
                if_match: None,
            },
            tally,
        )
        .await
    }

    /// Sends one call: paced by the shared limiter, bounded in flight, retried per policy.
    /// Returns the 2xx answer, or the error its final answer means; counted by how it ended
    /// (`rolesync_scim_calls_total`).
    async fn call(&self, call: Call<'_>, tally: &CallTally) -> Result<Answer, ScimError> {
        let (method, route) = (call.method.clone(), call.route);
        let result = self.call_with_retries(call, tally).await;
        let outcome = match &result {
            Ok(_) => ScimCallOutcome::Ok,
            Err(e) => e.outcome(),
        };
        self.metrics
            .scim_calls_total
            .with_label_values(&[method.as_str(), route, outcome.as_str()])
            .inc();
        result
    }

    async fn call_with_retries(
        &self,
        call: Call<'_>,
        tally: &CallTally,
    ) -> Result<Answer, ScimError> {
        let deadline = Instant::now() + self.max_retry;
        let mut attempt = 0u32;
        let mut refreshed = false;
        let mut rate_limited = 0u32;
        // A write attempt that got no answer, or a 5xx, may have landed all the same (the
        // target acted, then the answer was lost). A resend of such a write that the target
        // refuses as a version conflict (409/412) proves nothing: the conflict may be with
        // that very attempt. The call's outcome is then unknown, and said so (`Unavailable`),
        // never `Conflict`, which would tell the caller nothing of it landed.
        let mut may_have_landed = false;
        let is_write = call.method != Method::GET;
        loop {
            // One client span per attempt (a resend is a span of its own, as OpenTelemetry's
            // HTTP conventions have it); it includes the wait for the limiter, which is where
            // pacing shows in a trace.
            let span = tracing::info_span!(
                "scim",
                otel.name = %format!("{} {}", call.method, call.route),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = %call.method,
                url.template = call.route,
                http.resend_count = attempt + u32::from(refreshed) + rate_limited,
                http.response.status_code = tracing::field::Empty,
            );
            let outcome = self.send_once(&call, tally).instrument(span.clone()).await;
            match &outcome {
                SendOutcome::Answer(a) => {
                    span.record("http.response.status_code", a.status.as_u16());
                    if !a.status.is_success() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                SendOutcome::Transport(_) | SendOutcome::Token(_) => {
                    span.record("otel.status_code", "ERROR");
                }
                SendOutcome::Stopped => {}
            }
            let now = Instant::now();
            let (delay, detail) = match outcome {
                SendOutcome::Answer(a) if a.status.is_success() => return Ok(a),
                SendOutcome::Answer(a)
                    if a.status == StatusCode::UNAUTHORIZED
                        && self.tokens.can_refresh()
                        && !refreshed =>
                {
                    // A token the target no longer accepts: drop it, get a new one, resend once.
                    refreshed = true;
                    tally.retries.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .scim_retries_total
                        .with_label_values(&[ScimRetryReason::Unauthorized.as_str()])
                        .inc();
                    continue;
                }
                SendOutcome::Answer(a) => match classify(a.status) {
                    Verdict::Done
                        if may_have_landed
                            && matches!(
                                a.status,
                                StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED
                            ) =>
                    {
                        return Err(ScimError::Unavailable {
                            detail: format!(
                                "an earlier attempt got no answer and may have landed; the resend \
                                 was refused ({}): the outcome is unknown",
                                a.status
                            ),
                        });
                    }
                    Verdict::Done => return Err(error_for(a.status, &a.body)),
                    Verdict::RateLimited => {
                        // A 429 delays the call; it does not use up an attempt.
                        rate_limited += 1;
                        tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                        self.metrics.scim_rate_limited_total.inc();
                        let named = a
                            .headers
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, self.wait_bounds));
                        let delay = named.unwrap_or_else(|| {
                            backoff(
                                rate_limited,
                                Duration::from_millis(500),
                                Duration::from_secs(60),
                            )
                        });
                        self.limiter.hold_for(delay);
                        if now + delay > deadline {
                            return Err(ScimError::RateLimited);
                        }
                        tally.retries.fetch_add(1, Ordering::Relaxed);
                        self.metrics
                            .scim_retries_total
                            .with_label_values(&[ScimRetryReason::RateLimited.as_str()])
                            .inc();
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    Verdict::Transient => (
                        backoff(attempt, Duration::from_millis(200), Duration::from_secs(30)),
                        format!("{} {}", a.status, ErrorBody::parse(&a.body).text()),
                    ),
                },
                SendOutcome::Transport(detail) => (
                    backoff(attempt, Duration::from_millis(200), Duration::from_secs(30)),
                    detail,
                ),
                SendOutcome::Token(e) => return Err(e),
                SendOutcome::Stopped => return Err(ScimError::Stopped),
            };
            may_have_landed |= is_write;
            attempt += 1;
            if attempt >= self.max_attempts || now + delay > deadline {
                return Err(ScimError::Unavailable { detail });
            }
            tally.retries.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .scim_retries_total
                .with_label_values(&[ScimRetryReason::Transient.as_str()])
                .inc();
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(&self, call: &Call<'_>, tally: &CallTally) -> SendOutcome {
        // Have a token cached before queueing (a no-op when one is), so that fetching one (the
        // first call, an expiry, after a 401) is not paid between the limiter slot and the send,
        // where it would bunch calls up at the target. The token sent is taken after the waits.
        if let Err(e) = self.tokens.token().await {
            return SendOutcome::Token(e);
        }
        let _permit = match self.inflight.acquire().await {
            Ok(p) => p,
            Err(_) => return SendOutcome::Transport("client is shutting down".into()),
        };
        self.limiter.acquire().await;
        // Checked after the waits: a call queued behind others is dropped if its work was
        // stopped meanwhile (e.g. a 403 answered a sibling call), instead of being refused too.
        if tally.may_send().is_err() {
            return SendOutcome::Stopped;
        }
        // The token is taken last, just before sending: taken before the waits above, it could
        // expire while the call queues (with a short-lived token, every queued call got a 401).
        let token = match self.tokens.token().await {
            Ok(t) => t,
            Err(e) => return SendOutcome::Token(e),
        };
        // Again: fetching a token can take a round trip, and a stop (a cancel, a lost lease)
        // that came meanwhile must still keep the call from leaving. From here to the send
        // nothing waits. Under a lease, the call is not waited for past the lease's expiry.
        let lease_left = match tally.may_send() {
            Ok(left) => left,
            Err(()) => return SendOutcome::Stopped,
        };
        let mut req = self
            .http
            .request(call.method.clone(), &call.url)
            // `traceparent` of this attempt's span, when traces are on.
            .headers(crate::telemetry::trace_headers())
            .bearer_auth(token.expose_secret())
            .header(
                reqwest::header::ACCEPT,
                "application/scim+json, application/json",
            );
        if !call.query.is_empty() {
            req = req.query(call.query);
        }
        if let Some(left) = lease_left {
            req = req.timeout(left.min(self.timeout));
        }
        if let Some(id) = &tally.correlation {
            req = req.header("x-correlation-id", id.as_str());
        }
        if let Some(v) = &call.if_match {
            req = req.header(reqwest::header::IF_MATCH, v.as_str());
        }
        if let Some(body) = &call.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, call.content_type())
                .body(body.to_string());
        }
        let method = call.method.as_str();
        let started = Instant::now();
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let result = req.send().await;
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics
            .scim_request_duration_seconds
            .with_label_values(&[method, call.route])
            .observe(elapsed);
        match result {
            Err(e) => {
                self.metrics
                    .scim_requests_total
                    .with_label_values(&[method, call.route, "error"])
                    .inc();
                SendOutcome::Transport(e.without_url().to_string())
            }
            Ok(resp) => {
                let status = resp.status();
                self.metrics
                    .scim_requests_total
                    .with_label_values(&[method, call.route, status.as_str()])
                    .inc();
                let headers = resp.headers().clone();
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                let (allowed, count, reset) = (
                    header("inin-ratelimit-allowed").and_then(bounds::ratelimit_count),
                    header("inin-ratelimit-count").and_then(bounds::ratelimit_count),
                    header("inin-ratelimit-reset")
                        .and_then(|v| bounds::ratelimit_reset(v, self.wait_bounds)),
                );
                self.limiter.observe(allowed, count, reset);
                self.metrics.observe_ratelimit(allowed, count, reset);
                if status == StatusCode::UNAUTHORIZED {
                    self.tokens.invalidate(&token).await;
                }
                match resp.bytes().await {
                    Ok(body) => SendOutcome::Answer(Answer {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => {
                        SendOutcome::Transport(format!("reading the answer: {}", e.without_url()))
                    }
                }
            }
        }
    }
}

enum SendOutcome {
    Answer(Answer),
    Transport(String),
    Token(ScimError),
    /// Not sent: the tally was stopped.
    Stopped,
}

/// What a final non-2xx answer means.
fn error_for(status: StatusCode, body: &[u8]) -> ScimError {
    let e = ErrorBody::parse(body);
    match status.as_u16() {
        409 | 412 => ScimError::Conflict,
        400 if e.scim_type.as_deref() == Some("invalidVers") => ScimError::Conflict,
        404 => ScimError::NotFound,
        403 => ScimError::Forbidden { detail: e.text() },
        401 => ScimError::AuthFailed {
            detail: format!("401 after a fresh token: {}", e.text()),
        },
        s => ScimError::Rejected {
            status: s,
            detail: e.text(),
        },
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ScimError> {
    serde_json::from_slice(body).map_err(|e| ScimError::Protocol(e.to_string()))
}

fn etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::ETAG)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

/// Percent-encodes an id for use as one path segment.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
