//! The console as an OpenID Connect client (`auth.console.oidc`): a confidential client using
//! the authorization code flow with PKCE (`S256`), `state` and `nonce`. The provider's endpoints
//! come from its discovery document (read once, kept); the ID token is verified as a bearer
//! token is (`jwt::verify`, the provider's JWKS through `jwks::Jwks`), its audience being this
//! client, and its `nonce` must be the one this sign-in sent. The session is a sealed cookie
//! (`session`): no state on the server.

use super::jwks::{Jwks, fetch_json, json_body};
use super::jwt;
use super::session::{self, Pending, Sealer, Session};
use crate::configuration::{IssuerSettings, OidcSettings, session_key};
use crate::domain::{AuthFailure, PrincipalKind, Scope};
use crate::metrics::Metrics;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::OnceCell;

/// The provider's endpoints rolesync uses.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    end_session: Option<String>,
}

/// Why a sign-in failed; said to the person as a sentence, never with a token in it.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the provider cannot be reached or answered unexpectedly: {0}")]
    Provider(String),
    #[error("this sign-in is not the one this browser started (state), or it took too long")]
    State,
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the ID token did not verify ({})", .0.as_str())]
    Token(AuthFailure),
    #[error("your account has no group or role that may read jobs (jobs:read)")]
    NotAllowed,
}

pub struct OidcClient {
    settings: OidcSettings,
    issuer: IssuerSettings,
    jwks: Jwks,
    sealer: Sealer,
    http: reqwest::Client,
    endpoints: OnceCell<Endpoints>,
}

/// The purposes sealed cookies are bound to.
pub const SESSION: &str = "session";
pub const PENDING: &str = "pending";

impl OidcClient {
    pub fn new(
        settings: &OidcSettings,
        http: reqwest::Client,
        metrics: Metrics,
    ) -> anyhow::Result<OidcClient> {
        let keys: Vec<[u8; 32]> = settings
            .session_keys
            .iter()
            .filter_map(|k| session_key(k.expose_secret()))
            .collect();
        let sealer = Sealer::new(&keys)
            .ok_or_else(|| anyhow::anyhow!("auth.console.oidc.session_keys: no usable key"))?;
        let issuer = settings.as_issuer();
        Ok(OidcClient {
            jwks: Jwks::new(&issuer, http.clone(), metrics),
            issuer,
            settings: settings.clone(),
            sealer,
            http,
            endpoints: OnceCell::new(),
        })
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    async fn endpoints(&self) -> Result<&Endpoints, SignInError> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let doc = fetch_json(&self.http, &url)
                    .await
                    .map_err(SignInError::Provider)?;
                let text = |k: &str| doc[k].as_str().map(str::to_owned);
                if text("issuer").as_deref().map(|i| i.trim_end_matches('/'))
                    != Some(self.settings.issuer.trim_end_matches('/'))
                {
                    return Err(SignInError::Provider(
                        "its discovery document names another issuer".into(),
                    ));
                }
                match (text("authorization_endpoint"), text("token_endpoint")) {
                    (Some(authorization), Some(token)) => Ok(Endpoints {
                        authorization,
                        token,
                        end_session: text("end_session_endpoint"),
                    }),
                    _ => Err(SignInError::Provider(
                        "its discovery document lacks the authorization or token endpoint".into(),
                    )),
                }
            })
            .await
    }

    /// A new sign-in: the sealed `Pending` for the browser to keep, and where to send it.
    pub async fn begin(&self, now: u64) -> Result<(String, String), SignInError> {
        let endpoints = self.endpoints().await?;
        let pending = Pending {
            state: session::random_token(),
            nonce: session::random_token(),
            verifier: session::random_token(),
            started: now,
        };
        let sealed = self
            .sealer
            .seal(PENDING, &pending)
            .ok_or_else(|| SignInError::Provider("cannot seal the sign-in state".into()))?;
        let mut url = reqwest::Url::parse(&endpoints.authorization)
            .map_err(|_| SignInError::Provider("an unreadable authorization endpoint".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_url)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair(
                "code_challenge",
                &session::pkce_challenge(&pending.verifier),
            )
            .append_pair("code_challenge_method", "S256");
        Ok((sealed, url.to_string()))
    }

    /// The callback: `state` must be this browser's, the code is exchanged (with the PKCE
    /// verifier and the client's secret), the ID token verified and its `nonce` checked.
    pub async fn finish(
        &self,
        pending_cookie: Option<&str>,
        state: &str,
        code: &str,
        now: u64,
    ) -> Result<Session, SignInError> {
        let pending: Pending = pending_cookie
            .and_then(|c| self.sealer.open(PENDING, c))
            .ok_or(SignInError::State)?;
        if !session::same(&pending.state, state)
            || now.saturating_sub(pending.started) > session::PENDING_SECS
        {
            return Err(SignInError::State);
        }
        let endpoints = self.endpoints().await?;
        let secret = self
            .settings
            .client_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default();
        let exchange = self
            .http
            .post(&endpoints.token)
            .basic_auth(
                form_encode(&self.settings.client_id),
                Some(form_encode(&secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.settings.redirect_url),
                ("code_verifier", &pending.verifier),
            ])
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| SignInError::Provider(e.without_url().to_string()))?;
        let status = exchange.status();
        let body: Value = json_body(exchange).await.map_err(|e| {
            if status.is_client_error() {
                SignInError::Refused(e)
            } else {
                SignInError::Provider(e)
            }
        })?;
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| SignInError::Provider("no id_token in the token answer".into()))?;
        let peeked = jwt::peek(id_token).map_err(SignInError::Token)?;
        if peeked.iss != self.issuer.issuer {
            return Err(SignInError::Token(AuthFailure::Issuer));
        }
        let alg =
            jwt::allowed_algorithm(&peeked, &self.issuer.algorithms).map_err(SignInError::Token)?;
        let key = self
            .jwks
            .key(peeked.kid.as_deref(), alg)
            .await
            .map_err(SignInError::Token)?;
        let claims = jwt::verify(id_token, &key, alg, &self.issuer).map_err(SignInError::Token)?;
        if !session::same(claims["nonce"].as_str().unwrap_or_default(), &pending.nonce) {
            return Err(SignInError::Token(AuthFailure::Claims));
        }
        let scopes = jwt::scopes_of(&claims, &self.issuer);
        if !(scopes.contains(&Scope::JobsRead) || scopes.contains(&Scope::Admin)) {
            return Err(SignInError::NotAllowed);
        }
        Ok(Session {
            principal: jwt::principal_of(&claims, &self.issuer, PrincipalKind::Session),
            scopes,
            signed_in: now,
            seen: now,
            provider_logout: endpoints.end_session.is_some(),
        })
    }

    /// A session cookie's session, if it opens and still holds at `now`.
    pub fn session(&self, sealed: &str, now: u64) -> Option<Session> {
        let s: Session = self.sealer.open(SESSION, sealed)?;
        session::session_holds(
            &s,
            now,
            self.settings.session_lifetime_secs,
            self.settings.session_idle_secs,
        )
        .then_some(s)
    }

    pub fn seal_session(&self, s: &Session) -> Option<String> {
        self.sealer.seal(SESSION, s)
    }

    pub fn lifetime_secs(&self) -> u64 {
        self.settings.session_lifetime_secs
    }

    /// Where to send the browser at sign-out to end the provider's session too, if the
    /// provider offers a logout endpoint and a post-logout address is configured.
    pub async fn logout_url(&self) -> Option<String> {
        let back = self.settings.post_logout_redirect_url.as_deref()?;
        let endpoints = self.endpoints().await.ok()?;
        let mut url = reqwest::Url::parse(endpoints.end_session.as_deref()?).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("post_logout_redirect_uri", back);
        Some(url.to_string())
    }
}

/// `client_secret_basic` form-encodes the id and secret before base64 (RFC 6749 §2.3.1).
fn form_encode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_owned()))
        .unwrap_or_else(|| s.to_owned())
}
