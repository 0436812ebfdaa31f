//! The calls rolesync makes to the SCIM target, each paced, retried, counted and timed.

use super::ScimError;
use super::bounds;
use super::model::{ErrorBody, ListResponse, PATCH_OP_SCHEMA, ScimUser, escape_filter_value};
use super::rate::RateLimiter;
use super::retry::{Verdict, backoff, classify, parse_retry_after};
use super::token::{TokenManager, TokenSource};
use crate::configuration::Settings;
use crate::domain::{ScimCallOutcome, ScimRetryReason};
use crate::metrics::Metrics;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

/// Calls spent on behalf of one job, added to the job's `scim` counts; and the stop signal of
/// the work they are spent for.
#[derive(Debug, Default)]
pub struct CallTally {
    pub requests: AtomicI64,
    pub retries: AtomicI64,
    pub rate_limited: AtomicI64,
    /// Once set, no further call of this tally is sent: calls already queued (for the in-flight
    /// permit, the limiter, a retry pause) end with `ScimError::Stopped` instead.
    stopped: AtomicBool,
    /// The lease the calls are made under, when they are a chunk's (`pipeline::fence`): no
    /// call leaves after its `send_until`, and none is waited for past its `expires`.
    lease: std::sync::Mutex<Option<LeaseWindow>>,
    /// Sent as `x-correlation-id` with every call, so the target's logs name the work.
    correlation: Option<String>,
}

/// Until when a worker may send calls under its chunk's lease, and when the lease itself runs
/// out in the store, as instants of this process's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseWindow {
    pub send_until: Instant,
    pub expires: Instant,
}

impl CallTally {
    /// The tally of one chunk run: its calls carry `correlation` and are fenced by `lease`.
    pub fn fenced(correlation: String, lease: LeaseWindow) -> CallTally {
        CallTally {
            lease: std::sync::Mutex::new(Some(lease)),
            correlation: Some(correlation),
            ..CallTally::default()
        }
    }

    /// Stops every call of this tally that is not yet sent. Calls on the wire finish.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The lease was renewed: calls may leave until the new window's `send_until`. A window
    /// never moves back (a late answer of an older renewal does not shorten a newer one).
    pub fn extend_lease(&self, window: LeaseWindow) {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        match *lease {
            Some(w) if w.send_until >= window.send_until => {}
            _ => *lease = Some(window),
        }
    }

    /// Whether the lease's send window has passed (never, for calls made under no lease).
    pub fn lease_expired(&self) -> bool {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|w| Instant::now() >= w.send_until)
    }

    /// May a call leave now? Not once stopped; not past the lease's send window, which also
    /// stops the tally (the run learns why from `lease_expired`). With a lease, also how long
    /// the call may take: no answer is waited for past the lease's expiry in the store.
    fn may_send(&self) -> Result<Option<Duration>, ()> {
        if self.is_stopped() {
            return Err(());
        }
        let lease = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        match lease {
            None => Ok(None),
            Some(w) => {
                let now = Instant::now();
                if now >= w.send_until {
                    self.stop();
                    return Err(());
                }
                Ok(Some(w.expires.saturating_duration_since(now)))
            }
        }
    }

    pub fn snapshot(&self) -> (i64, i64, i64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.rate_limited.load(Ordering::Relaxed),
        )
    }
}

/// A role as the target's catalog (`GET /api/v2/authorization/roles`) describes it.
#[derive(Debug, Clone)]
pub struct TargetRole {
    /// The role's id in the target (empty when the catalog gave none).
    pub id: String,
    pub name: String,
    pub permissions: Vec<String>,
}

/// What the Authorization write path needs of the target: its home division and the id of
/// each role name (`GET …/divisions/home`, `GET …/authorization/roles`).
#[derive(Debug)]
pub struct AuthzCatalog {
    pub home_division: String,
    pub role_ids: std::collections::HashMap<String, String>,
}

/// How long a fetched `AuthzCatalog` is used before it is fetched again.
const AUTHZ_CATALOG_TTL: Duration = Duration::from_secs(600);

pub struct ScimClient {
    /// The Authorization catalog, fetched on first use and kept `AUTHZ_CATALOG_TTL`.
    authz_catalog: tokio::sync::Mutex<Option<(Instant, std::sync::Arc<AuthzCatalog>)>>,
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
    /// Cap on a wait the target asks for (`target.max_server_delay_secs`).
    max_server_delay: Duration,
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
        if self.route.starts_with("/authorization/") {
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
            http,
            base: t.scim_base.trim_end_matches('/').to_owned(),
            api_base: settings.api_base(),
            tokens,
            limiter: RateLimiter::new(t.requests_per_minute),
            metrics,
            inflight: Semaphore::new(t.max_concurrency),
            max_attempts: t.max_attempts,
            max_retry: Duration::from_secs(t.max_retry_secs),
            max_server_delay: Duration::from_secs(t.max_server_delay_secs),
            timeout: Duration::from_secs(t.timeout_secs),
        })
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

    /// The target's role catalog (Genesys Platform API), every page.
    pub async fn list_roles(&self, tally: &CallTally) -> Result<Vec<TargetRole>, ScimError> {
        let mut roles = Vec::new();
        for page in 1..=1000u64 {
            let query = [
                ("pageSize", "100".to_owned()),
                ("pageNumber", page.to_string()),
            ];
            let a = self
                .get(
                    "/authorization/roles",
                    format!("{}/api/v2/authorization/roles", self.api_base),
                    &query,
                    tally,
                )
                .await?;
            let v: serde_json::Value = parse(&a.body)?;
            let entities = v
                .get("entities")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            for e in &entities {
                let Some(name) = e.get("name").and_then(|n| n.as_str()) else {
                    continue;
                };
                let mut permissions = Vec::new();
                for p in e
                    .get("permissionPolicies")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                {
                    let domain = p.get("domain").and_then(|d| d.as_str()).unwrap_or("*");
                    let entity = p.get("entityName").and_then(|d| d.as_str()).unwrap_or("*");
                    for action in p
                        .get("actionSet")
                        .and_then(|a| a.as_array())
                        .into_iter()
                        .flatten()
                    {
                        if let Some(action) = action.as_str() {
                            permissions.push(format!("{domain}:{entity}:{action}"));
                        }
                    }
                }
                roles.push(TargetRole {
                    id: e
                        .get("id")
                        .and_then(|i| i.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    name: name.to_owned(),
                    permissions,
                });
            }
            let page_count = v
                .get("pageCount")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            if entities.is_empty() || page >= page_count {
                break;
            }
        }
        Ok(roles)
    }

    /// The home division and role ids, fetched (2 calls and more for a catalog over 100
    /// roles) at most once per `AUTHZ_CATALOG_TTL`; the calls count in `tally`.
    pub async fn authz_catalog(
        &self,
        tally: &CallTally,
    ) -> Result<std::sync::Arc<AuthzCatalog>, ScimError> {
        let mut cached = self.authz_catalog.lock().await;
        if let Some((at, c)) = cached.as_ref()
            && at.elapsed() < AUTHZ_CATALOG_TTL
        {
            return Ok(c.clone());
        }
        let home_division = self.home_division(tally).await?;
        let role_ids = self
            .list_roles(tally)
            .await?
            .into_iter()
            .filter(|r| !r.id.is_empty())
            .map(|r| (r.name, r.id))
            .collect();
        let c = std::sync::Arc::new(AuthzCatalog {
            home_division,
            role_ids,
        });
        *cached = Some((Instant::now(), c.clone()));
        Ok(c)
    }

    /// The id of the org's home division (`GET /api/v2/authorization/divisions/home`).
    pub async fn home_division(&self, tally: &CallTally) -> Result<String, ScimError> {
        let a = self
            .get(
                "/authorization/divisions/home",
                format!("{}/api/v2/authorization/divisions/home", self.api_base),
                &[],
                tally,
            )
            .await?;
        let v: serde_json::Value = parse(&a.body)?;
        v.get("id")
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ScimError::Protocol("the home division has no id".into()))
    }

    /// One page of the grants made in a division
    /// (`GET /api/v2/authorization/divisions/{divisionId}/grants`): `(total, [(user id, role
    /// name)])`, users only (a grant to a group or an OAuth client is skipped).
    pub async fn division_grants(
        &self,
        division_id: &str,
        page_number: u64,
        page_size: u64,
        tally: &CallTally,
    ) -> Result<(u64, Vec<(String, String)>), ScimError> {
        let query = [
            ("pageSize", page_size.to_string()),
            ("pageNumber", page_number.to_string()),
        ];
        let a = self
            .get(
                "/authorization/divisions/{divisionId}/grants",
                format!(
                    "{}/api/v2/authorization/divisions/{}/grants",
                    self.api_base,
                    path_segment(division_id)
                ),
                &query,
                tally,
            )
            .await?;
        let v: serde_json::Value = parse(&a.body)?;
        let total = v
            .get("total")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ScimError::Protocol("a grants page without `total`".into()))?;
        let mut grants = Vec::new();
        for e in v
            .get("entities")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let subject = e.get("subjectId").and_then(|s| s.as_str());
            let role = e
                .get("role")
                .and_then(|r| r.get("name"))
                .and_then(|n| n.as_str());
            let kind = e.get("subjectType").and_then(|t| t.as_str());
            if let (Some(subject), Some(role)) = (subject, role)
                && kind.is_none_or(|k| k == "PC_USER")
            {
                grants.push((subject.to_owned(), role.to_owned()));
            }
        }
        Ok((total, grants))
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
                            .and_then(|v| parse_retry_after(v, self.max_server_delay));
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
                        .and_then(|v| bounds::ratelimit_reset(v, self.max_server_delay)),
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
