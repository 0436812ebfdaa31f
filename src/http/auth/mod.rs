//! Who is calling: an API key (`keys`), or a bearer token (JWT) from a configured issuer
//! (`jwt`, checked against the issuer's cached JWKS, `jwks`); and the limit on failed
//! authentications per source address (`limit`). `Authenticator` is the one check every way in
//! goes through (the API's `Authorization` header, the console's sign-in form and cookie); a
//! `Caller` is what it answers: a principal (`domain::Principal`, recorded on jobs, events and
//! log lines) and its scopes.
//!
//! A refusal says no more than 401 (or 429 for an address over its limit): the reason is
//! counted (`rolesync_auth_failures_total{reason}`) and logged as a word, never the credential.

pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod limit;
pub mod oidc;
pub mod session;

use super::AppState;
use crate::configuration::{AuthSettings, IssuerSettings};
pub use crate::domain::Scope;
use crate::domain::{AuthFailure, Principal, PrincipalKind};
use crate::error::ApiError;
use crate::metrics::Metrics;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use jwks::Jwks;
pub use keys::{ApiKey, KeyRing, key_digest_hex};
use limit::FailureLimiter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    scopes: Vec<Scope>,
}

impl Caller {
    pub fn new(principal: Principal, scopes: Vec<Scope>) -> Caller {
        Caller { principal, scopes }
    }

    /// 403 unless the caller has `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }

    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }
}

/// Keys, issuers and the failure limiter, built once from `[auth]`.
pub struct Authenticator {
    pub keys: KeyRing,
    issuers: Vec<(IssuerSettings, Jwks)>,
    limiter: FailureLimiter,
    metrics: Metrics,
    /// The console's OpenID Connect sign-in, when configured.
    pub console: Option<oidc::OidcClient>,
}

impl Authenticator {
    pub fn new(auth: &AuthSettings, metrics: Metrics) -> anyhow::Result<Authenticator> {
        let keys = KeyRing::new(auth).map_err(|e| anyhow::anyhow!("auth.keys_file: {e}"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        let issuers = auth
            .issuers
            .iter()
            .map(|i| (i.clone(), Jwks::new(i, http.clone(), metrics.clone())))
            .collect();
        let console = match &auth.console.oidc {
            Some(o) => Some(oidc::OidcClient::new(o, http, metrics.clone())?),
            None => None,
        };
        Ok(Authenticator {
            keys,
            issuers,
            limiter: FailureLimiter::new(&auth.failures),
            metrics,
            console,
        })
    }

    /// With metrics of its own (benchmarks, tools).
    pub fn standalone(auth: &AuthSettings) -> anyhow::Result<Authenticator> {
        Authenticator::new(auth, Metrics::new()?)
    }

    pub fn issuers(&self) -> usize {
        self.issuers.len()
    }

    /// The caller `presented` (an API key or a bearer token) stands for.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, AuthFailure> {
        if !self.issuers.is_empty() && jwt::looks_like_jwt(presented) {
            return self.token(presented, PrincipalKind::Token).await;
        }
        self.key(presented).ok_or(AuthFailure::UnknownKey)
    }

    /// An API key only (the console's key sign-in).
    pub fn key(&self, presented: &str) -> Option<Caller> {
        let keys = self.keys.current();
        let key = keys::find(&keys, presented)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.metrics
            .auth_key_last_used_seconds
            .with_label_values(&[&key.name])
            .set(now);
        Some(Caller::new(
            Principal::api_key(&key.name),
            key.scopes.clone(),
        ))
    }

    /// A bearer token of a configured issuer: `kind` is `Token` for `/v1`, `Session` for an ID
    /// token the console signs in with.
    pub async fn token(&self, token: &str, kind: PrincipalKind) -> Result<Caller, AuthFailure> {
        let (issuer, claims) = self.verify(token).await?;
        let scopes = jwt::scopes_of(&claims, issuer);
        Ok(Caller::new(
            jwt::principal_of(&claims, issuer, kind),
            scopes,
        ))
    }

    /// The verified claims of a token, and its issuer.
    pub async fn verify(
        &self,
        token: &str,
    ) -> Result<(&IssuerSettings, serde_json::Value), AuthFailure> {
        let peeked = jwt::peek(token)?;
        let (issuer, jwks) = self
            .issuers
            .iter()
            .find(|(i, _)| i.issuer == peeked.iss)
            .ok_or(AuthFailure::Issuer)?;
        let alg = jwt::allowed_algorithm(&peeked, &issuer.algorithms)?;
        let key = jwks.key(peeked.kid.as_deref(), alg).await?;
        let claims = jwt::verify(token, &key, alg, issuer)?;
        Ok((issuer, claims))
    }

    /// `Err(429)` while `addr` is over its limit of failures.
    pub fn check_limit(&self, addr: IpAddr) -> Result<(), ApiError> {
        match self.limiter.blocked(addr, Instant::now()) {
            None => Ok(()),
            Some(wait) => {
                self.metrics
                    .auth_failures_total
                    .with_label_values(&["limited"])
                    .inc();
                Err(ApiError::TooManyRequests {
                    detail: "too many failed authentications from this address; try again later"
                        .into(),
                    retry_after_secs: wait,
                })
            }
        }
    }

    /// Counts a failure (by reason) and, unless nothing was presented, against `addr`.
    pub fn failed(&self, addr: IpAddr, reason: AuthFailure) {
        self.metrics
            .auth_failures_total
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::info!(auth.failure = reason.as_str(), "authentication refused");
        if reason != AuthFailure::Missing {
            self.limiter.failed(addr, Instant::now());
        }
    }
}

/// The address a request came from (the TCP peer); unspecified when the server was not
/// started with connection info.
pub fn source_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let auth = &state.auth;
        let addr = source_addr(parts);
        auth.check_limit(addr)?;
        let Some(presented) = bearer(parts) else {
            auth.failed(addr, AuthFailure::Missing);
            return Err(ApiError::Unauthorized);
        };
        match auth.authenticate(presented).await {
            Ok(caller) => Ok(caller),
            Err(reason) => {
                auth.failed(addr, reason);
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// The request's source address, as an extractor (`source_addr`).
pub struct SourceAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for SourceAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<SourceAddr, Self::Rejection> {
        Ok(SourceAddr(source_addr(parts)))
    }
}
