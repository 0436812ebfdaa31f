//! `/v1/webhooks/deliveries`: the audit outbox, for ops.

use super::AppState;
use super::auth::{Caller, Scope};
use crate::domain::DeliveryStatus;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/webhooks/deliveries?status=pending|delivered|dead`
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsRead)?;
    let status = match &q.status {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::field("status", format!("one of {}", DeliveryStatus::expected()))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let deliveries = state
        .store
        .list_deliveries(status.map(DeliveryStatus::as_str), limit)
        .await?;
    Ok(Json(json!({"deliveries": deliveries})))
}

/// `POST /v1/webhooks/deliveries/{id}/redeliver` (`admin`): sends the event again, same id.
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let n = state.store.redeliver(&id, None).await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no delivery of event {id}")));
    }
    state.pipeline.deps().wake_dispatcher.notify_one();
    Ok(Json(json!({"event_id": id, "requeued": n})))
}
