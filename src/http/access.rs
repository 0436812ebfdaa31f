//! The request span and the access log: one line per request, at a level its status decides
//! (`level_for`), with method, matched route, status, `duration_ms` and the request id.
//!
//! The request id is the caller's `x-request-id` when it is a sane one (1 to 128 visible ASCII
//! characters), else a new UUID; either way the response echoes it, the span carries it (so
//! every line logged while serving the request does), and a job records it.
//! A caller's `traceparent` makes the request span a child of the caller's span.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tower_http::request_id::RequestId;
use tracing::Instrument;

pub(super) const REQUEST_ID: &str = "x-request-id";

/// Longest `x-request-id` honoured; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// How loud the access line of a request is. A pure function of the route and the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// - 5xx: `error` (a fault of the service or of something it needs), except 503: rolesync
///   answers 503 on purpose (not ready, shutting down, the store briefly unavailable,
///   backpressure), always with `Retry-After`, so `warn`.
/// - 401, 403 and 429: `warn` (a key that does not work, or a caller being throttled: worth
///   seeing, not a fault of the service). Other 4xx: `info` (the answer tells the caller what
///   to fix).
/// - Anything else: `info`, but a successful probe or scrape (`/healthz`, `/readyz`,
///   `/metrics`), called every few seconds by the platform, is `debug`.
pub(crate) fn level_for(route: &str, status: StatusCode) -> AccessLevel {
    match status.as_u16() {
        503 => AccessLevel::Warn,
        500.. => AccessLevel::Error,
        401 | 403 | 429 => AccessLevel::Warn,
        400..=499 => AccessLevel::Info,
        _ if matches!(route, "/healthz" | "/readyz" | "/metrics") => AccessLevel::Debug,
        _ => AccessLevel::Info,
    }
}

fn sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic())
}

pub(super) async fn access_log(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = match req.headers().get(REQUEST_ID) {
        Some(v) if sane_request_id(v) => v.clone(),
        _ => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
    };
    req.headers_mut().insert(REQUEST_ID, request_id.clone());
    req.extensions_mut()
        .insert(RequestId::new(request_id.clone()));
    let method = req.method().clone();
    // The matched route, never the raw path: bounded, and free of ids.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let id = request_id.to_str().unwrap_or_default().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request.id = %id,
    );
    crate::telemetry::set_parent_from_headers(&span, req.headers());
    let mut resp = next.run(req).instrument(span.clone()).await;
    resp.headers_mut().insert(REQUEST_ID, request_id);
    let status = resp.status();
    let duration_ms = started.elapsed().as_millis() as u64;
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let _in = span.enter();
    macro_rules! access {
        ($level:expr) => {
            tracing::event!(
                $level,
                http.request.method = %method,
                http.route = %route,
                http.response.status_code = status.as_u16(),
                duration_ms,
                request.id = %id,
                "request"
            )
        };
    }
    match level_for(&route, status) {
        AccessLevel::Debug => access!(tracing::Level::DEBUG),
        AccessLevel::Info => access!(tracing::Level::INFO),
        AccessLevel::Warn => access!(tracing::Level::WARN),
        AccessLevel::Error => access!(tracing::Level::ERROR),
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_status_and_probes_are_quiet() {
        let at = |route, code| level_for(route, StatusCode::from_u16(code).unwrap_or_default());
        assert_eq!(at("/v1/jobs", 202), AccessLevel::Info);
        assert_eq!(at("/v1/jobs", 400), AccessLevel::Info);
        assert_eq!(at("/v1/jobs/{id}", 404), AccessLevel::Info);
        assert_eq!(at("/v1/jobs", 401), AccessLevel::Warn);
        assert_eq!(at("/v1/jobs", 429), AccessLevel::Warn);
        assert_eq!(at("/healthz", 503), AccessLevel::Warn);
        assert_eq!(at("/v1/jobs", 503), AccessLevel::Warn);
        assert_eq!(at("/v1/jobs", 500), AccessLevel::Error);
        assert_eq!(at("/healthz", 200), AccessLevel::Debug);
        assert_eq!(at("/metrics", 200), AccessLevel::Debug);
        assert_eq!(at("/readyz", 500), AccessLevel::Error);
    }

    #[test]
    fn only_sane_request_ids_are_honoured() {
        let ok = |s: &str| HeaderValue::from_str(s).map(|v| sane_request_id(&v));
        assert_eq!(ok("abc-123").ok(), Some(true));
        assert_eq!(ok("").ok(), Some(false));
        assert_eq!(ok("two words").ok(), Some(false));
        assert_eq!(ok(&"x".repeat(129)).ok(), Some(false));
        assert_eq!(ok(&"x".repeat(128)).ok(), Some(true));
    }
}
