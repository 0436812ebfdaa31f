//! `POST /v1/events/genesys`: Genesys audit events pushed by Amazon EventBridge (an API
//! destination; docs/genesys-eventbridge.md), handled as the drift feed handles polled ones
//! (pipeline::drift): rolesync's own changes are ignored, the users an event names are read
//! back, and each drifted one gets `role_sync.drift_detected` with `changed_by` and
//! `changed_at` (and, with `drift.fix`, a reconcile over them). EventBridge delivers at least
//! once: an event whose id was seen before is answered `duplicate` and does nothing.

use super::AppState;
use super::auth::{Caller, Scope};
use crate::error::{ApiError, ApiResult};
use crate::pipeline::drift::{self, Digest};
use crate::scim::CallTally;
use crate::store::{FeedCommit, PollCommit, PollJob};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// An EventBridge event is at most 256 KiB.
const MAX_EVENT_BODY: usize = 256 * 1024;

/// What became of a pushed event.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PushResult {
    /// Handled: its users were read back, drift reported.
    Accepted,
    /// Seen before (a redelivery): nothing done.
    Duplicate,
    /// Not a role change by someone else (another entity, or rolesync's own change).
    Ignored,
}

/// The answer to a pushed event.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushAnswer {
    /// The EventBridge event's `id`.
    pub event_id: String,
    pub result: PushResult,
    /// Users found drifted (each got `role_sync.drift_detected`).
    pub drifted: usize,
}

/// An EventBridge event forwarding a Genesys audit message (`detail.eventBody`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "v2.audits.entitytype.{id}.entityid.{id}",
    "source": "aws.partner/genesys.com/cloud/00000000-0000-0000-0000-000000000000/rolesync",
    "time": "2026-12-06T14:02:00Z",
    "detail": {"topicName": "v2.audits.entitytype.Role.entityid.0b3c…", "eventBody": {
        "id": "0f1e…", "serviceName": "PeoplePermissions", "entityType": "Role", "action": "MemberAdd",
        "eventDate": "2026-12-06T14:02:00.000Z", "user": {"id": "…", "name": "Ada Admin"},
        "client": {"id": "…"}, "entity": {"id": "…", "name": "System Administrator"},
        "propertyChanges": [{"property": "userIds", "oldValues": [], "newValues": ["…"]}]}}
}))]
pub struct PushedEvent {
    /// Unique per event; redeliveries carry the same id (1 to 256 characters).
    pub id: String,
    /// The audit message (Genesys' `AuditLogMessage`): an object.
    #[schema(value_type = Object)]
    pub detail: Value,
}

fn event_id(v: &Value) -> ApiResult<String> {
    match v.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control) => {
            Ok(id.to_owned())
        }
        _ => Err(ApiError::field(
            "id",
            "must be a string of 1 to 256 characters",
        )),
    }
}

#[utoipa::path(
    post,
    path = "/v1/events/genesys",
    operation_id = "push_genesys_event",
    tag = "drift",
    request_body(content = PushedEvent, content_type = "application/json",
        description = "An Amazon EventBridge event whose `detail.eventBody` is a Genesys audit message"),
    responses(
        (status = 200, description = "Handled, a duplicate, or ignored", body = PushAnswer),
        (status = 400, description = "Not an EventBridge event with an audit message (naming the field)"),
        (status = 403, description = "The key lacks `events:write`"),
        (status = 409, description = "drift.source is not `audit`: rolesync does not take pushed events"),
        (status = 413, description = "A body over 256 KiB"),
        (status = 503, description = "A user could not be read back, or the store is busy: EventBridge retries", headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
/// `POST /v1/events/genesys` (`events:write`): one audit event, pushed by EventBridge.
pub async fn push(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<Json<PushAnswer>> {
    caller.require(Scope::EventsWrite)?;
    if state.settings.drift.source != crate::domain::DriftSource::Audit {
        return Err(ApiError::Conflict(
            "pushed events are taken only with drift.source = \"audit\"".into(),
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_EVENT_BODY)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!("an event is at most {MAX_EVENT_BODY} bytes"))
        })?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::field("body", e.to_string()))?;
    if !v.is_object() {
        return Err(ApiError::field(
            "body",
            "must be a JSON object (an EventBridge event)",
        ));
    }
    let id = event_id(&v)?;
    let Some(message) = v.pointer("/detail/eventBody").filter(|m| m.is_object()) else {
        return Err(ApiError::field(
            "detail.eventBody",
            "must be an object (a Genesys audit message)",
        ));
    };
    let answer = |result, drifted| {
        Json(PushAnswer {
            event_id: id.clone(),
            result,
            drifted,
        })
    };
    let metrics = &state.metrics;
    let count = |r: &str| metrics.pushed_events_total.with_label_values(&[r]).inc();
    if state.store.pushed_event_seen(&id).await? {
        count("duplicate");
        return Ok(answer(PushResult::Duplicate, 0));
    }
    let deps = state.pipeline.deps();
    let mut digest = Digest::default();
    digest.add(message, drift::own_client(deps));
    metrics.drift_own_changes_ignored_total.inc_by(digest.own);
    let message_id = message
        .get("id")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.len() <= 256);
    let mut pushed: Vec<&str> = vec![id.as_str()];
    if let Some(m) = message_id.filter(|m| *m != id) {
        pushed.push(m);
    }
    let tally = CallTally::default();
    let drifted = if digest.latest.is_empty() {
        Vec::new()
    } else {
        drift::examine(deps, &digest, &tally).await.map_err(|detail| {
            tracing::warn!(event.id = %id, error = %detail, "pushed event: a read back failed; answering 503 so it is delivered again");
            ApiError::Unavailable { detail, retry_after_secs: 30 }
        })?
    };
    let fix = (state.settings.drift.fix && !drifted.is_empty())
        .then(|| drift::reconcile_job(deps, false));
    let events = drift::report(deps, &drifted, fix.as_ref().map(|j| j.id.as_str()));
    let ids: Vec<String> = drifted.iter().map(|d| d.external_id.clone()).collect();
    let reason = format!(
        "{}: {} user(s) changed by hand, pushed by EventBridge",
        drift::FIX_REASON,
        ids.len()
    );
    let commit = FeedCommit {
        lease: None,
        pushed: &pushed,
        events: &events,
        job: fix
            .as_ref()
            .map(|j| (j, PollJob::Users(&ids), reason.as_str())),
    };
    match state.store.commit_drift(commit).await? {
        PollCommit::Duplicate => {
            count("duplicate");
            Ok(answer(PushResult::Duplicate, 0))
        }
        PollCommit::ReconcileRunning(running) => Err(ApiError::Unavailable {
            detail: format!("reconcile job {running} has not ended; deliver the event again later"),
            retry_after_secs: 60,
        }),
        PollCommit::LeaseLost | PollCommit::Committed { .. } => {
            drift::log_found(&drifted, fix.as_ref().map(|j| j.id.as_str()), "push");
            if fix.is_some() {
                state.pipeline.job_submitted();
            }
            if digest.latest.is_empty() {
                count("ignored");
                return Ok(answer(PushResult::Ignored, 0));
            }
            count("accepted");
            metrics
                .drift_detected_total
                .with_label_values(&["push"])
                .inc_by(drifted.len() as u64);
            tracing::info!(event.id = %id, drifted = drifted.len(), calls = tally.snapshot().0, "pushed audit event handled");
            Ok(answer(PushResult::Accepted, drifted.len()))
        }
    }
}
