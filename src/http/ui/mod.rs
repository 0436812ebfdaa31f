//! `/ui`: a read-only console for operators, server-rendered HTML; no script at all (a page of a
//! job still running reloads itself with `<meta http-equiv="refresh">`).
//!
//! Sign-in: `/ui/login` takes an API key, checks it exactly as the API does
//! (`auth::authenticate`) and requires `jobs:read`; the browser then keeps it in an `HttpOnly;
//! Secure; SameSite=Strict; Path=/ui` cookie, checked again on every page (`cookie`). CSRF: the
//! only posts are the sign-in and the sign-out, refused when the browser says they come from
//! another site (`cookie::cross_site`); every other route only reads. The pages read through
//! the same store calls and views as `/v1`, so their numbers are the API's; the CSV of rejected
//! rows is `GET /v1/jobs/{id}/items`'s CSV (`items_csv`).

mod cookie;
mod html;
mod oidc;
mod pages;

use super::AppState;
use super::auth::{Caller, Scope, SourceAddr};
use super::items_csv;
use super::views::{ItemView, JobView};
use crate::domain::AuthFailure;
use crate::domain::Outcome;
use crate::error::ApiError;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use html::Html;
use serde::Deserialize;
use std::time::Duration;

/// Jobs on a page of `/ui/jobs`, and rejected rows on a page of `/ui/jobs/{id}`.
const PAGE: i64 = 50;
/// A sign-in form is one short field: anything bigger is refused before it is read.
const MAX_FORM_BYTES: usize = 4096;
/// Seconds between reloads of a page that shows a job still going.
const REFRESH_SECS: u32 = 5;
/// The one stylesheet (`style-src 'self'`: no inline style).
const STYLESHEET: &str = include_str!("console.css");

/// The policy every console answer carries: nothing but this origin's stylesheet and forms,
/// no script of any kind, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/console.css", get(stylesheet))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(oidc::logout))
        .route("/ui/oidc/start", get(oidc::start))
        .route("/ui/oidc/callback", get(oidc::callback))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/rejected.csv", get(rejected_csv))
        .route("/ui/policy", get(policy))
        .route("/ui/signed-out", get(oidc::signed_out))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn_with_state(state, oidc::touch_session))
        .layer(middleware::map_response(harden))
}

/// Every console answer: the CSP, no caching of what a signed-in operator saw, no sniffing,
/// no referrer (a job id in a URL stays here).
async fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A failed page as HTML, with the API's status; a server error says no more than the API's.
struct UiError(ApiError);

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError(e)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> UiError {
        UiError(ApiError::from(e))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let text = if status.is_server_error() {
            // The API error's own answer logs the cause; its body is dropped.
            let _ = self.0.into_response();
            "an internal error occurred".to_owned()
        } else {
            self.0.to_string()
        };
        let title = status.canonical_reason().unwrap_or("Error");
        html(
            status,
            pages::page(title, None, None, pages::message(&text)),
        )
    }
}

/// A signed-in operator whose key may read jobs. Without a valid sign-in: a redirect to the
/// sign-in form; with a key that lacks `jobs:read` (its scopes changed since): 403.
struct Operator(Caller);

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Operator, Response> {
        // A session from the company's provider first, else a key.
        let caller = oidc::session_of(state, &parts.headers)
            .map(|s| Caller::new(s.principal, s.scopes))
            .or_else(|| cookie::presented_key(&parts.headers).and_then(|key| state.auth.key(&key)));
        let Some(caller) = caller else {
            // Right after a sign-in the cookie must be there: if it is not, the browser refused
            // it (a `Secure` cookie over plain http to a host other than localhost).
            let just_signed_in = parts.uri.query() == Some("signed_in");
            let to = if just_signed_in {
                "/ui/login?cookie_refused"
            } else {
                "/ui/login"
            };
            return Err(Redirect::to(to).into_response());
        };
        caller
            .require(Scope::JobsRead)
            .map_err(|e| UiError(e).into_response())?;
        Ok(Operator(caller))
    }
}

/// The ways in this console offers.
fn ways(state: &AppState) -> pages::SignInWays {
    pages::SignInWays {
        oidc: state.auth.console.is_some(),
        key_form: state.settings.auth.console.api_key_sign_in,
    }
}

/// The sign-in page with `why` the last attempt failed, answered with `status`.
fn sign_in_page(state: &AppState, status: StatusCode, why: Option<&str>) -> Response {
    html(
        status,
        pages::page("Sign in", None, None, pages::login(why, ways(state))),
    )
}

async fn login_form(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let why = (uri.query() == Some("cookie_refused")).then_some(
        "Your browser did not keep the sign-in: its cookie is Secure, so browsers keep it only \
         over https (or on localhost). Open the console over https.",
    );
    sign_in_page(&state, StatusCode::OK, why)
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(
    State(state): State<AppState>,
    SourceAddr(addr): SourceAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let refuse = |status, why: &str| sign_in_page(&state, status, Some(why));
    if cookie::cross_site(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Sign in from the console's own page.",
        );
    }
    if !state.settings.auth.console.api_key_sign_in {
        return refuse(
            StatusCode::FORBIDDEN,
            "Signing in with an API key is turned off.",
        );
    }
    if let Err(e) = state.auth.check_limit(addr) {
        let wait = match &e {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => 60,
        };
        let mut resp = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from this address; try again later.",
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    // A post that is not the form (no `key`, another content type, too big): its 4xx, shown.
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return refuse(
                rejection.status(),
                &format!(
                    "The sign-in form could not be read: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let key = form.key.trim();
    let caller = (key.len() <= cookie::MAX_KEY_BYTES)
        .then(|| state.auth.key(key))
        .flatten();
    let Some(caller) = caller else {
        state.auth.failed(addr, AuthFailure::UnknownKey);
        return refuse(StatusCode::UNAUTHORIZED, "That API key is not valid.");
    };
    if caller.require(Scope::JobsRead).is_err() {
        return refuse(
            StatusCode::FORBIDDEN,
            "That API key lacks the jobs:read scope the console needs.",
        );
    }
    tracing::info!(actor = %caller.principal.label(), "console sign-in");
    let mut resp = Redirect::to("/ui/jobs?signed_in").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie::sign_in(key)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct Paging {
    cursor: Option<String>,
    after: Option<String>,
}

async fn jobs(
    State(state): State<AppState>,
    Operator(who): Operator,
    Query(q): Query<Paging>,
) -> Result<Response, UiError> {
    let jobs = state
        .store
        .list_jobs(None, PAGE, q.cursor.as_deref())
        .await?;
    let next = (jobs.len() as i64 == PAGE)
        .then(|| jobs.last().map(|j| j.id.clone()))
        .flatten();
    let hold = state.scim.visible_hold_left();
    let views: Vec<JobView> = jobs
        .iter()
        .map(|j| JobView::new(j).with_hold(hold))
        .collect();
    let going = views.iter().any(|j| !j.status.is_terminal());
    let body = pages::jobs(&views, next.as_deref());
    Ok(html(
        StatusCode::OK,
        pages::page(
            "Jobs",
            Some(&who.principal.name),
            going.then_some(REFRESH_SECS),
            body,
        ),
    ))
}

async fn find(state: &AppState, id: &str) -> Result<crate::store::JobRecord, UiError> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| UiError(ApiError::NotFound(format!("job {id} not found"))))
}

async fn job(
    State(state): State<AppState>,
    Operator(who): Operator,
    Path(id): Path<String>,
    Query(q): Query<Paging>,
) -> Result<Response, UiError> {
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<i64>().map_err(|_| {
            UiError(ApiError::field(
                "after",
                "not a line number from a previous page",
            ))
        })?),
    };
    let record = find(&state, &id).await?;
    let items = state
        .store
        .list_items(&id, Some(Outcome::Rejected), PAGE, after)
        .await?;
    let next_after = (items.len() as i64 == PAGE)
        .then(|| items.last().map(|i| i.line))
        .flatten();
    let items: Vec<ItemView> = items.into_iter().map(ItemView::new).collect();
    let view = JobView::new(&record).with_hold(state.scim.visible_hold_left());
    let body = pages::job(
        &view,
        pages::RejectedPage {
            items: &items,
            first_page: after.is_none(),
            next_after,
        },
        state.settings.target.requests_per_minute,
    );
    let title = format!("Job {}", view.job_id);
    // A later page of rejected rows is being read: no reload under the reader.
    let refresh = (!view.status.is_terminal() && after.is_none()).then_some(REFRESH_SECS);
    Ok(html(
        StatusCode::OK,
        pages::page(&title, Some(&who.principal.name), refresh, body),
    ))
}

async fn policy(State(state): State<AppState>, Operator(who): Operator) -> Response {
    let policy = state.policy.current();
    let privileged: Vec<String> = policy.summary().privileged_roles.into_iter().collect();
    let mut body = Html::new();
    if let Some(e) = state.policy.last_error() {
        body.raw("<p class=\"err\">The last reload failed; this policy is still in force: ")
            .text(e)
            .raw("</p>");
    }
    body.append(pages::policy(&policy, &privileged));
    body.append(pages::policy_vs_org(&org_diff(&state, &policy).await));
    html(
        StatusCode::OK,
        pages::page("Policy", Some(&who.principal.name), None, body),
    )
}

/// The policy against the org's role catalog, as planning sees it: the catalog is the one the
/// planner uses (read at most once per 10 minutes per process, `ScimClient::role_catalog`), so
/// a page load costs the target a call only when no job read it lately. Bounded: a slow target
/// does not hold the page.
async fn org_diff(state: &AppState, policy: &crate::policy::Policy) -> pages::OrgView {
    let scim = &state.pipeline.deps().scim;
    let tally = crate::scim::CallTally::default();
    match tokio::time::timeout(Duration::from_secs(5), scim.role_catalog(&tally)).await {
        Ok(Ok(c)) => pages::OrgView::Read {
            diff: crate::policy::org::diff(policy, &c.names),
            read_at: c.read_at,
        },
        Ok(Err(e)) => pages::OrgView::Unreadable(e.to_string()),
        Err(_) => pages::OrgView::Unreadable("no answer within 5 s".into()),
    }
}

/// `/ui/jobs/{id}/rejected.csv`: what `GET /v1/jobs/{id}/items?outcome=rejected` answers with
/// `Accept: text/csv` (a link cannot send that header, nor the API's `Authorization`).
async fn rejected_csv(
    State(state): State<AppState>,
    Operator(_): Operator,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let job = find(&state, &id).await?;
    Ok(items_csv::response(
        state.store.clone(),
        job.id,
        Some(Outcome::Rejected),
    ))
}
