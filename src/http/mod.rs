//! The HTTP API (described by `/openapi.json`, rendered at `/docs`, summarised in the README):
//! handlers only. Each handler checks the caller's scope, calls the store or the pipeline, and
//! maps the result; the work happens elsewhere.
//!
//! Every operation is a handler with its `#[utoipa::path]` description, added to the router by
//! `api()` with `routes!`: the router and the document are built from that one list, so a route
//! cannot be served undescribed, nor described unserved. What the router serves outside the
//! document is listed in `UNDOCUMENTED_PREFIXES`.

mod access;
pub mod auth;
mod docs;
mod events;
mod health;
mod items_csv;
mod jobs;
mod policy;
mod slots;
mod target;
mod undo;
pub use slots::IngestSlots;
mod ui;
mod validate;
pub mod views;
mod webhooks;

pub use validate::judge_file;

use crate::audit::EventFactory;
use crate::configuration::Settings;
use crate::error::{ApiError, problem_response, slug_of};
use crate::ingest::spool::{BodyBounds, Compressed};
use crate::metrics::Metrics;
use crate::pipeline::{Circuit, Pipeline};
use crate::policy::live::LivePolicy;
use crate::store::Store;
use auth::Authenticator;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub policy: Arc<LivePolicy>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    /// API keys, token issuers and the failed-authentication limiter (`auth`).
    pub auth: Arc<Authenticator>,
    pub events: EventFactory,
    pub pipeline: Arc<Pipeline>,
    pub circuit: Arc<Circuit>,
    pub shutting_down: Arc<AtomicBool>,
    /// Uploads in progress, per principal and in all.
    pub ingests: Arc<slots::IngestSlots>,
    /// The target's client: its limiter tells whether calls are held (`waiting` on jobs,
    /// `rolesync_target_wait_seconds`).
    pub scim: Arc<crate::scim::ScimClient>,
}

/// Path prefixes the router serves outside the API document: pages for people, not operations
/// for programs. Each entry says why; `tests/api/openapi.rs` holds every other route to be
/// documented.
pub const UNDOCUMENTED_PREFIXES: &[&str] = &[
    // Swagger UI: its page and its files (`docs::swagger_ui`).
    docs::DOCS_PATH,
    // The operators' console: HTML pages signed in by cookie (`ui`), read-only views of the
    // same data the documented operations serve.
    "/ui",
];

/// Every operation of the API, each with its description: the router's routes and the
/// document's operations, from one list. A new operation is one `routes!` line here (its
/// handler carries `#[utoipa::path]`). Handlers answering the same path with different methods
/// share a `routes!`.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::root())
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::items))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::approve))
        .routes(routes!(undo::revert))
        .routes(routes!(undo::reconcile))
        .routes(routes!(events::push))
        .routes(routes!(validate::validate))
        .routes(routes!(policy::get))
        .routes(routes!(policy::role))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(target::check))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(docs::openapi))
}

/// The OpenAPI document of `api()`, as `GET /openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = api().into_openapi();
    docs::complete(&mut doc);
    doc
}

pub fn router(state: AppState) -> Router {
    let max_body = usize::try_from(state.settings.server.max_body_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(state.settings.server.request_timeout_secs);
    let (api, _) = api().split_for_parts();
    // The body limits and decoding apply to the uploads (`/v1`); each handler bounds its body
    // further (`body_bounds`).
    let api = api
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestDecompressionLayer::new().gzip(true))
        .layer(middleware::from_fn(meter_compressed));
    Router::new()
        .merge(api)
        .merge(ui::routes(state.clone()))
        .merge(Router::from(docs::swagger_ui()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred".into(),
                Vec::new(),
            )
        }))
        // The request span and the access line, around everything that can answer (a panic
        // turned 500 and a time-out included); it also sets and echoes `x-request-id`.
        .layer(middleware::from_fn(access::access_log))
        // Both carry an API key: `Authorization` for `/v1`, the console's cookie for `/ui`.
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .with_state(state)
}

/// Counts the bytes of a compressed body as the decoder (the next layer in) reads them, for
/// `ingest.max_expansion_ratio` (see `ingest::spool::BodyBounds`).
async fn meter_compressed(req: Request, next: Next) -> Response {
    if !req
        .headers()
        .contains_key(axum::http::header::CONTENT_ENCODING)
    {
        return next.run(req).await;
    }
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = counter.clone();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Compressed(counter));
    let body = axum::body::Body::from_stream(body.into_data_stream().inspect(move |frame| {
        if let Ok(bytes) = frame {
            seen.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }));
    next.run(Request::from_parts(parts, body)).await
}

/// What a batch body may cost (`server.max_body_bytes`, `ingest.max_expansion_ratio`).
fn body_bounds(settings: &Settings, compressed: Option<axum::Extension<Compressed>>) -> BodyBounds {
    BodyBounds {
        max_bytes: settings.server.max_body_bytes,
        max_expansion_ratio: settings.ingest.max_expansion_ratio,
        compressed: compressed.map(|axum::Extension(c)| c),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Request counts and latency keyed on the matched route, so label cardinality stays bounded.
/// Also turns axum's plain-text rejections (413 from the body limit, 400 from decompression)
/// into problem+json.
async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    let resp = problemise(resp).await;
    let status = resp.status().as_u16().to_string();
    state
        .metrics
        .http_requests_total
        .with_label_values(&[&method, &route, &status])
        .inc();
    state
        .metrics
        .http_request_duration_seconds
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn problemise(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/problem+json")
                || ct.starts_with("application/json")
                || ct.starts_with("text/html")
                || ct.starts_with("text/plain; version")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    // A 405 keeps the methods the path does answer (RFC 9110 requires `Allow` on it).
    let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than server.max_body_bytes".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint".to_owned(),
        _ => {
            let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("bad request")
                    .to_lowercase()
            } else {
                text
            }
        }
    };
    let mut resp = problem_response(status, slug_of(status), detail, Vec::new());
    if let Some(allow) = allow {
        resp.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    resp
}
