//! `/v1/webhooks/deliveries`: the audit outbox, for ops.

use super::AppState;
use super::auth::{Caller, Scope};
use super::views::{DeliveryList, DeliveryView, Redelivery};
use crate::domain::DeliveryStatus;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only the deliveries in this state (`dead`: the retries ran out).
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// At most this many (default 100); a value outside 1..=1000 is brought within it.
    #[param(example = 100)]
    limit: Option<i64>,
}

/// Audit webhook deliveries
///
/// The audit outbox, oldest first: each event for each endpoint, with its attempts and last
/// error. Scope `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries",
    operation_id = "listDeliveries",
    tag = "webhooks",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "Deliveries, oldest first", body = DeliveryList),
        (status = 400, description = "An unknown `status`, or a `limit` that is not an integer"),
        (status = 403, description = "The key lacks `jobs:read`"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
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
        .await?
        .into_iter()
        .map(DeliveryView::new)
        .collect::<Result<_, _>>()?;
    Ok(Json(DeliveryList { deliveries }))
}

/// Send an event again with the same webhook-id (scope admin)
///
/// Queues the event (and the others of the batch it was sent in) again now, with a fresh retry
/// schedule; it keeps its `webhook-id`, so a receiver that had it already can tell. Scope
/// `admin`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/deliveries/{id}/redeliver",
    operation_id = "redeliverEvent",
    tag = "webhooks",
    params(("id" = String, Path, description = "The event's id (`event_id`)")),
    responses(
        (status = 200, description = "Queued again", body = Redelivery),
        (status = 400, description = "The id is not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `admin`"),
        (status = 404, description = "No delivery of this event"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Redelivery>> {
    caller.require(Scope::Admin)?;
    let n = state.store.redeliver(&id, None).await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no delivery of event {id}")));
    }
    tracing::info!(
        target: "audit",
        { webhook.id = %id, deliveries = n, actor = %caller.principal.label() },
        "webhook redelivered"
    );
    state.pipeline.deps().wake_dispatcher.notify_one();
    Ok(Json(Redelivery {
        event_id: id,
        requeued: n,
    }))
}
