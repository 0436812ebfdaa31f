//! The console's sign-in through the company's OpenID provider (`auth.console.oidc`), its
//! session cookie, and sign-out.
//!
//! - `GET /ui/oidc/start`: a new sign-in (`state`, `nonce`, PKCE verifier, sealed in a cookie
//!   `Path=/ui/oidc` for 10 minutes), then a redirect to the provider.
//! - `GET /ui/oidc/callback`: the provider's answer; the code is exchanged, the ID token
//!   verified, its groups or roles mapped to scopes (`jobs:read` needed), and the session sealed
//!   in `rolesync_session` (`HttpOnly; Secure; SameSite=Lax; Path=/ui`: `Lax`, since the
//!   callback arrives from the provider's site). Failed sign-ins count toward the address's
//!   limit (`auth.failures`).
//! - Every page: the session opens with any configured key and holds within its lifetime and
//!   idle limit; it is sealed again with `seen` = now at most once a minute (`touch_session`).
//! - `POST /ui/logout`: both cookies cleared; when the provider offers a logout endpoint (and
//!   `post_logout_redirect_url` is set), `/ui/signed-out` sends the browser there.

use super::{AppState, cookie, html, pages};
use crate::domain::AuthFailure;
use crate::http::auth::SourceAddr;
use crate::http::auth::session::Session;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::time::{SystemTime, UNIX_EPOCH};

pub const SESSION_COOKIE: &str = "rolesync_session";
const PENDING_COOKIE: &str = "rolesync_oidc";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie::cookie_value(v, name))
}

/// The session the request's cookie carries, if it opens and still holds.
pub(super) fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let client = state.auth.console.as_ref()?;
    client.session(cookie_of(headers, SESSION_COOKIE)?, now())
}

fn set_cookie(resp: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn session_cookie(sealed: &str, max_age: u64) -> String {
    format!(
        "{SESSION_COOKIE}={sealed}; HttpOnly; Secure; SameSite=Lax; Path=/ui; Max-Age={max_age}"
    )
}

fn failed_page(status: StatusCode, why: &str) -> Response {
    html(
        status,
        pages::page(
            "Sign in",
            None,
            None,
            pages::login(
                Some(why),
                pages::SignInWays {
                    oidc: true,
                    key_form: false,
                },
            ),
        ),
    )
}

pub(super) async fn start(State(state): State<AppState>) -> Response {
    let Some(client) = state.auth.console.as_ref() else {
        return Redirect::to("/ui/login").into_response();
    };
    match client.begin(now()).await {
        Ok((sealed, to)) => {
            let mut resp = Redirect::to(&to).into_response();
            set_cookie(
                &mut resp,
                &format!(
                    "{PENDING_COOKIE}={sealed}; HttpOnly; Secure; SameSite=Lax; Path=/ui/oidc; Max-Age={}",
                    crate::http::auth::session::PENDING_SECS
                ),
            );
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in cannot start");
            failed_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("Signing in is not possible now: {e}"),
            )
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The longest `code` or `state` read from the provider's redirect.
const MAX_PARAM: usize = 2048;

pub(super) async fn callback(
    State(state): State<AppState>,
    SourceAddr(addr): SourceAddr,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(client) = state.auth.console.as_ref() else {
        return Redirect::to("/ui/login").into_response();
    };
    if let Err(e) = state.auth.check_limit(addr) {
        return failed_page(StatusCode::TOO_MANY_REQUESTS, &e.to_string());
    }
    let (Some(code), Some(st)) = (q.code.as_deref(), q.state.as_deref()) else {
        let why = q.error.as_deref().unwrap_or("no code in the answer");
        state.auth.failed(addr, AuthFailure::Session);
        return failed_page(
            StatusCode::UNAUTHORIZED,
            &format!(
                "The provider did not sign you in: {}",
                why.chars().take(200).collect::<String>()
            ),
        );
    };
    if code.len() > MAX_PARAM || st.len() > MAX_PARAM {
        state.auth.failed(addr, AuthFailure::Malformed);
        return failed_page(StatusCode::UNAUTHORIZED, "The sign-in answer is malformed.");
    }
    let pending = cookie_of(&headers, PENDING_COOKIE);
    let mut resp = match client.finish(pending, st, code, now()).await {
        Ok(session) => {
            let Some(sealed) = client.seal_session(&session) else {
                return failed_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Cannot seal the session.",
                );
            };
            tracing::info!(actor = %session.principal.label(), "console sign-in");
            let mut resp = Redirect::to("/ui/jobs?signed_in").into_response();
            set_cookie(&mut resp, &session_cookie(&sealed, client.lifetime_secs()));
            resp
        }
        Err(e) => {
            use crate::http::auth::oidc::SignInError as E;
            let (status, reason) = match &e {
                E::Provider(_) => (StatusCode::BAD_GATEWAY, None),
                E::State => (StatusCode::UNAUTHORIZED, Some(AuthFailure::Session)),
                E::Refused(_) => (StatusCode::UNAUTHORIZED, Some(AuthFailure::Session)),
                E::Token(r) => (StatusCode::UNAUTHORIZED, Some(*r)),
                E::NotAllowed => (StatusCode::FORBIDDEN, None),
            };
            if let Some(r) = reason {
                state.auth.failed(addr, r);
            }
            tracing::warn!(error = %e, "console sign-in refused");
            failed_page(status, &format!("Sign-in failed: {e}."))
        }
    };
    set_cookie(
        &mut resp,
        &format!("{PENDING_COOKIE}=; HttpOnly; Secure; SameSite=Lax; Path=/ui/oidc; Max-Age=0"),
    );
    resp
}

/// Seals the session again with `seen` = now (at most once a minute), so the idle limit counts
/// from the last page seen.
pub(super) async fn touch_session(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let session = session_of(&state, req.headers());
    let mut resp = next.run(req).await;
    let Some(mut s) = session else {
        return resp;
    };
    let Some(client) = state.auth.console.as_ref() else {
        return resp;
    };
    let t = now();
    if resp.status().is_success() && crate::http::auth::session::needs_touch(&s, t) {
        s.seen = t;
        if let Some(sealed) = client.seal_session(&s) {
            let left = client
                .lifetime_secs()
                .saturating_sub(t - s.signed_in.min(t));
            set_cookie(&mut resp, &session_cookie(&sealed, left));
        }
    }
    resp
}

pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if cookie::cross_site(&headers) {
        return super::UiError(crate::error::ApiError::Forbidden(
            crate::domain::Scope::JobsRead,
        ))
        .into_response();
    }
    let session = session_of(&state, &headers);
    if let Some(s) = &session {
        tracing::info!(actor = %s.principal.label(), "console sign-out");
    }
    let to = match (&session, state.auth.console.as_ref()) {
        (Some(s), Some(client)) if s.provider_logout => match client.logout_url().await {
            Some(_) => "/ui/signed-out",
            None => "/ui/login",
        },
        _ => "/ui/login",
    };
    let mut resp = Redirect::to(to).into_response();
    set_cookie(&mut resp, &cookie::sign_out());
    set_cookie(
        &mut resp,
        &format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Lax; Path=/ui; Max-Age=0"),
    );
    resp
}

/// After a local sign-out: on to the provider's logout (a page that refreshes there, since the
/// console's CSP keeps form posts to this origin), with a link for a browser that does not.
pub(super) async fn signed_out(State(state): State<AppState>) -> Response {
    let Some(url) = (match state.auth.console.as_ref() {
        Some(c) => c.logout_url().await,
        None => None,
    }) else {
        return Redirect::to("/ui/login").into_response();
    };
    let mut resp = html(StatusCode::OK, pages::signed_out(&url));
    if let Ok(v) = HeaderValue::from_str(&format!("0; url={url}")) {
        resp.headers_mut().insert("refresh", v);
    }
    resp
}
