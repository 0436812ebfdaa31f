//! Liveness, readiness and metrics: no authentication.

use super::AppState;
use super::views::{
    Health, HealthStatus, PolicyCheck, PolicyReload, Readiness, ReadinessChecks, ReadyStatus,
    StoreCheck, TargetCheck, TargetOk,
};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::sync::atomic::Ordering;

/// Liveness
///
/// The process answers and its sync pipeline can run: 503 with the reason while no pipeline
/// runs, or while it is in a crash loop. No API key.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Alive", body = Health),
        (status = 503, description = "Unhealthy, with the reason", body = Health,
            example = json!({"status": "unhealthy", "error": "the sync pipeline is not running"})),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.pipeline.health().problem() {
        None => (
            StatusCode::OK,
            Json(Health {
                status: HealthStatus::Ok,
                error: None,
            }),
        ),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: HealthStatus::Unhealthy,
                error: Some(problem),
            }),
        ),
    }
}

/// Readiness: store reachable, policy loaded, not shutting down
///
/// Ready when the store answers and the service is not shutting down. A failed policy reload
/// (the previous policy stays in force) and a paused target are shown but do not make it
/// unready. No API key.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the store is unreachable, or the service is shutting down", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let store_ok = state.store.ping().await.is_ok();
    let shutting_down = state.shutting_down.load(Ordering::Relaxed);
    let ready = store_ok && !shutting_down;
    let body = Readiness {
        status: if ready {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        checks: ReadinessChecks {
            store: if store_ok {
                StoreCheck::Ok
            } else {
                StoreCheck::Unreachable
            },
            // The previous policy stays in force; the error shows what to fix.
            policy: match state.policy.last_error() {
                None => PolicyCheck {
                    status: PolicyReload::Ok,
                    error: None,
                },
                Some(e) => PolicyCheck {
                    status: PolicyReload::ReloadFailed,
                    error: Some(e),
                },
            },
            shutting_down,
            target: match state.circuit.reason() {
                None => TargetCheck::Ok(TargetOk::Ok),
                Some(r) => TargetCheck::Paused(r),
            },
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus metrics
///
/// The Prometheus text format (0.0.4); the gauges read from the store are refreshed first
/// (bounded: see docs/metrics.md). No API key.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Metrics", body = String, content_type = "text/plain",
            example = "# TYPE rolesync_jobs gauge\nrolesync_jobs{status=\"running\"} 1\n"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Read at the scrape: the hold ends by itself, with no event to set the gauge back to 0.
    state.metrics.target_wait_seconds.set(
        state
            .scim
            .hold_left()
            .map_or(0.0, |d| (d.as_secs_f64() * 10.0).ceil() / 10.0),
    );
    state
        .metrics
        .refresh_store_gauges(crate::store::now_ms(), || state.store.gauges())
        .await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
