//! Liveness, readiness and metrics: no authentication.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::atomic::Ordering;

/// `GET /healthz`: the process answers and its sync pipeline can run (503 with the reason
/// while no pipeline runs, or in a crash loop: see `pipeline/supervisor.rs`).
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.pipeline.health().problem() {
        None => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "error": problem})),
        ),
    }
}

/// `GET /readyz`: the store answers, a policy is loaded, and the service is not shutting down.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = state.store.ping().await.is_ok();
    let shutting_down = state.shutting_down.load(Ordering::Relaxed);
    let policy_error = state.policy.last_error();
    let target = state.circuit.reason();
    let ready = store_ok && !shutting_down;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "store": if store_ok { "ok" } else { "unreachable" },
            "policy": match &policy_error {
                None => json!({"status": "ok"}),
                // The previous policy stays in force; the error shows what to fix.
                Some(e) => json!({"status": "reload_failed", "error": e}),
            },
            "shutting_down": shutting_down,
            "target": match target { None => json!("ok"), Some(r) => json!(r) },
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// `GET /metrics`: Prometheus text format. The gauges read from the store are refreshed first
/// (bounded: see `Metrics::refresh_store_gauges`).
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .refresh_store_gauges(crate::store::now_ms(), || state.store.gauges())
        .await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
