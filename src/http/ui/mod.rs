//! `/ui`: a read-only console for operators, server-rendered HTML, no JavaScript.
//!
//! Sign-in: `/ui/login` takes an API key, checks it exactly as the API does
//! (`auth::authenticate`) and requires `jobs:read`; the browser then holds only a random session
//! id in a cookie that is `HttpOnly; Secure; SameSite=Strict; Path=/ui` (`session`). Browsers
//! send `Secure` cookies over plain http only to localhost, so behind anything else the console
//! needs TLS in front of it. CSRF: the only state-changing requests are the sign-in and sign-out
//! form posts; a `SameSite=Strict` cookie is not sent on cross-site requests, so another site can
//! neither act with a session nor see a page (and forcing a sign-in needs the key).
//! The pages read through the same store calls and views as `/v1`, so their numbers match.

mod csv_export;
mod html;
mod pages;
mod session;

use super::AppState;
use super::auth::{Caller, Scope, authenticate};
use super::views::{ItemView, JobView};
use crate::domain::Outcome;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router, middleware};
use html::Html;
use serde::Deserialize;
use session::{MAX_SESSIONS, SESSION_TTL, Sessions, cookie_value};
use std::sync::Arc;

const COOKIE: &str = "rolesync_session";
/// Jobs on a page of `/ui/jobs`, and rejected rows on a page of `/ui/jobs/{id}`.
const PAGE: i64 = 50;
/// A sign-in form is one short field: anything bigger is refused before it is read.
const MAX_FORM_BYTES: usize = 4096;

/// The console's routes, with their own session table (one per router, so per service).
pub fn routes() -> Router<AppState> {
    let sessions = Arc::new(Sessions::new(MAX_SESSIONS, SESSION_TTL));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/rejected.csv", get(rejected_csv))
        .route("/ui/policy", get(policy))
        .layer(Extension(sessions))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::map_response(harden))
}

/// Every console answer: no caching of what a signed-in operator saw, no framing, no scripts.
async fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
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
            // Logged by the API error's own answer, which is then dropped.
            let _ = self.0.into_response();
            "an internal error occurred".to_owned()
        } else {
            self.0.to_string()
        };
        let title = status.canonical_reason().unwrap_or("Error");
        html(status, pages::page(title, None, pages::message(&text)))
    }
}

/// A signed-in operator whose key may read jobs. Without a valid session: a redirect to the
/// sign-in form.
struct Operator(Caller);

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Operator, Response> {
        let sessions = parts.extensions.get::<Arc<Sessions>>();
        let caller = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookie_value(v, COOKIE))
            .and_then(|id| sessions?.get(id));
        let Some(caller) = caller else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        caller
            .require(Scope::JobsRead)
            .map_err(|e| UiError(e).into_response())?;
        Ok(Operator(caller))
    }
}

async fn login_form() -> Response {
    html(
        StatusCode::OK,
        pages::page("Sign in", None, pages::login(None)),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let refuse = |status, why: &str| html(status, pages::page("Sign in", None, pages::login(Some(why))));
    let Some(caller) = authenticate(&state.keys, form.key.trim()) else {
        return refuse(StatusCode::UNAUTHORIZED, "That API key is not valid.");
    };
    if caller.require(Scope::JobsRead).is_err() {
        return refuse(
            StatusCode::FORBIDDEN,
            "That API key lacks the jobs:read scope the console needs.",
        );
    }
    tracing::info!(key = %caller.key_name, "console sign-in");
    let id = sessions.open(caller);
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut resp = Redirect::to("/ui/jobs").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: axum::http::HeaderMap,
) -> Response {
    for v in headers.get_all(header::COOKIE) {
        if let Some(id) = v.to_str().ok().and_then(|v| cookie_value(v, COOKIE)) {
            sessions.close(id);
        }
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "rolesync_session=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0",
        ),
    );
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
    let views: Vec<JobView> = jobs.iter().map(JobView::new).collect();
    let body = pages::jobs(&views, next.as_deref());
    Ok(html(
        StatusCode::OK,
        pages::page("Jobs", Some(&who.key_name), body),
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
            UiError(ApiError::field("after", "not a line number from a previous page"))
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
    let view = JobView::new(&record);
    let body = pages::job(
        &view,
        pages::RejectedPage {
            items: &items,
            next_after,
        },
        state.settings.target.requests_per_minute,
    );
    let title = format!("Job {}", view.job_id);
    Ok(html(
        StatusCode::OK,
        pages::page(&title, Some(&who.key_name), body),
    ))
}

async fn policy(State(state): State<AppState>, Operator(who): Operator) -> Response {
    let policy = state.policy.current();
    let summary = policy.summary();
    let privileged: Vec<String> = summary["privileged_roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut body = Html::new();
    if let Some(e) = state.policy.last_error() {
        body.raw("<p class=\"err\">The last reload failed; this policy is still in force: ")
            .text(e)
            .raw("</p>");
    }
    body.append(pages::policy(&policy, &privileged));
    html(
        StatusCode::OK,
        pages::page("Policy", Some(&who.key_name), body),
    )
}

/// `/ui/jobs/{id}/rejected.csv`: the job's rejected rows, streamed a page at a time, in the
/// columns of `GET /v1/jobs/{id}/items` as CSV, which a batch upload reads back as it is.
async fn rejected_csv(
    State(state): State<AppState>,
    Operator(_): Operator,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let job = find(&state, &id).await?;
    Ok(csv_export::rejected(state.store.clone(), job.id))
}

