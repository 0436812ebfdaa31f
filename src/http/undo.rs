//! `POST /v1/jobs/{id}/revert` and `POST /v1/reconcile`: jobs whose rows the store makes from
//! what it recorded (`store::undo`). Once stored they are ordinary jobs: planned, approved,
//! synced, audited and ended by the pipeline like a submitted batch.

use super::AppState;
use super::auth::{Caller, Scope};
use super::views::JobView;
use crate::domain::{JobKind, Mode};
use crate::error::{ApiError, ApiResult};
use crate::store::{NewGenerated, ReconcileCreated, RevertCreated};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_http::request_id::RequestId;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevertQuery {
    /// Plan the revert and write nothing.
    #[serde(default)]
    dry_run: bool,
    /// Users changed since the job: apply the inverse delta on top of what they hold now,
    /// instead of leaving them alone (`changed_since`).
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/revert",
    operation_id = "revertJob",
    tag = "jobs",
    params(("id" = String, Path, description = "The id of the job to revert"), RevertQuery),
    responses(
        (status = 202, description = "Accepted: the revert job (kind `revert`, `original_job_id` set), queued", body = JobView,
            headers(("Location" = String, description = "`/v1/jobs/{id}` of the new job"))),
        (status = 400, description = "A bad query parameter, or an id not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `jobs:write`"),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job has not ended, was a dry run, applied nothing, predates the record of roles before and after, or is being reverted"),
        (status = 503, description = "The service is shutting down, or the store is busy or unreachable"),
    )
)]
/// `POST /v1/jobs/{id}/revert` (`jobs:write`): a job of kind `revert` that puts back the roles
/// the job found, for every user it changed, where the user still holds what it left
/// (`?force=true`: the inverse delta on top of what they hold now). `202` with the new job.
pub async fn revert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RevertQuery>,
    request_id: Option<Extension<RequestId>>,
) -> ApiResult<Response> {
    caller.require(Scope::JobsWrite)?;
    refuse_while_stopping(&state)?;
    let original = state
        .store
        .get_job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    let job = new_job(
        &state,
        &caller,
        JobKind::Revert,
        original.mode,
        q.dry_run,
        request_id,
    )
    .with_force(q.force);
    let created = state.store.create_revert(&id, &job).await?;
    match created {
        RevertCreated::Created { users } => {
            tracing::info!(job.id = %job.id, original = %id, users, dry_run = q.dry_run, force = q.force, actor = %caller.principal.label(), "revert accepted");
            accepted(&state, &job.id).await
        }
        RevertCreated::NotFound => Err(ApiError::NotFound(format!("job {id} not found"))),
        RevertCreated::NotEnded(status) => Err(ApiError::Conflict(format!(
            "job {id} is {status}: a job is reverted once it has ended"
        ))),
        RevertCreated::DryRun => Err(ApiError::Conflict(format!(
            "job {id} was a dry run: it wrote nothing to revert"
        ))),
        RevertCreated::NothingApplied => Err(ApiError::Conflict(format!(
            "job {id} applied no change to any user: nothing to revert"
        ))),
        RevertCreated::Unrecorded { users } => Err(ApiError::Conflict(format!(
            "job {id} changed {users} users before rolesync kept the roles before and after a \
             write: it cannot be reverted"
        ))),
        RevertCreated::RevertRunning(by) => Err(ApiError::Conflict(format!(
            "job {id} is being reverted by job {by}; wait for it to end"
        ))),
    }
}

/// The body of `POST /v1/reconcile`; an empty body is a real `merge` reconcile.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconcileBody {
    /// Report the drift and write nothing.
    #[serde(default)]
    dry_run: bool,
    /// `merge` adds what is missing; `replace` also removes what the desired state lacks.
    #[serde(default)]
    mode: Mode,
}

/// A reconcile body is a few words: anything longer is refused before it is parsed.
const MAX_RECONCILE_BODY: usize = 4096;

#[utoipa::path(
    post,
    path = "/v1/reconcile",
    operation_id = "reconcile",
    tag = "jobs",
    request_body(content = ReconcileBody, content_type = "application/json",
        description = "Optional: an empty body is a real `merge` reconcile"),
    responses(
        (status = 202, description = "Accepted: the reconcile job (kind `reconcile`), queued", body = JobView,
            headers(("Location" = String, description = "`/v1/jobs/{id}` of the new job"))),
        (status = 400, description = "The body is not a reconcile request (naming `body`)"),
        (status = 403, description = "The key lacks `jobs:write`"),
        (status = 409, description = "Another reconcile has not ended"),
        (status = 413, description = "A body over 4 KiB"),
        (status = 503, description = "The service is shutting down, or the store is busy or unreachable"),
    )
)]
/// `POST /v1/reconcile` (`jobs:write`): a job of kind `reconcile` over every user with a
/// desired state. `202` with the job; `409` while another reconcile has not ended.
pub async fn reconcile(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    body: Body,
) -> ApiResult<Response> {
    caller.require(Scope::JobsWrite)?;
    refuse_while_stopping(&state)?;
    let bytes = axum::body::to_bytes(body, MAX_RECONCILE_BODY)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "a reconcile body is at most {MAX_RECONCILE_BODY} bytes"
            ))
        })?;
    let body: ReconcileBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ReconcileBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::field("body", e.to_string()))?
    };
    let job = new_job(
        &state,
        &caller,
        JobKind::Reconcile,
        body.mode,
        body.dry_run,
        request_id,
    );
    match state.store.create_reconcile(&job).await? {
        ReconcileCreated::Created { users } => {
            tracing::info!(
                target: "audit",
                {
                    job.id = %job.id,
                    users,
                    dry_run = body.dry_run,
                    job.mode = body.mode.as_str(),
                    actor = %caller.principal.label(),
                },
                "reconcile started"
            );
            accepted(&state, &job.id).await
        }
        ReconcileCreated::Running(running) if running.is_empty() => Err(ApiError::Conflict(
            "another reconcile has just started; wait for it to end".into(),
        )),
        ReconcileCreated::Running(running) => Err(ApiError::Conflict(format!(
            "reconcile job {running} has not ended; one reconcile runs at a time"
        ))),
    }
}

fn refuse_while_stopping(state: &AppState) -> ApiResult<()> {
    if state
        .shutting_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(ApiError::Unavailable {
            detail: "shutting down".into(),
            retry_after_secs: 5,
        });
    }
    Ok(())
}

fn new_job(
    state: &AppState,
    caller: &Caller,
    kind: JobKind,
    mode: Mode,
    dry_run: bool,
    request_id: Option<Extension<RequestId>>,
) -> NewGenerated {
    let id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("generate", job.id = %id, job.kind = kind.as_str());
    NewGenerated {
        traceparent: crate::telemetry::traceparent_of(&span),
        id,
        kind,
        mode,
        dry_run,
        request_id: request_id
            .as_ref()
            .and_then(|Extension(r)| r.header_value().to_str().ok())
            .map(str::to_owned),
        policy_fingerprint: Some(state.policy.current().fingerprint()),
        privileged_allowed: caller.require(Scope::RolesPrivileged).is_ok(),
        revert_force: false,
        submitted_by: caller.principal.clone(),
    }
}

/// `202` with the stored job and its `Location`, waking the planner.
async fn accepted(state: &AppState, job_id: &str) -> ApiResult<Response> {
    let job = state
        .store
        .get_job(job_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {job_id} not found")))?;
    state.pipeline.job_submitted();
    let mut resp = (StatusCode::ACCEPTED, Json(JobView::new(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{job_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}
