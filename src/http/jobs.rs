//! `/v1/jobs`: submit batches, read jobs and their rows, cancel and approve.

use super::AppState;
use super::auth::{Caller, Scope};
use crate::audit::events::{JOB_FINISHED, ROLE_SYNC_REJECTED, rejected_data};
use crate::domain::{JobStatus, Outcome, ReasonCode};
use crate::error::{ApiError, ApiResult};
use crate::ingest::{self, BatchQuery, Format};
use crate::pipeline;
use crate::store::{CreateJob, IdempotencyClaim, ItemRecord, JobRecord, NewJob, now_ms};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_http::request_id::RequestId;

/// `POST /v1/jobs`: stores the whole batch in one transaction, then answers 202.
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BatchQuery>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Scope::JobsWrite)?;
    if state
        .shutting_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(ApiError::Unavailable {
            detail: "shutting down".into(),
            retry_after_secs: 5,
        });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type \"{content_type}\" is not supported; use application/json, application/x-ndjson or text/csv"
        ))
    })?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))?
                .trim();
            if k.is_empty() || k.len() > 255 {
                return Err(ApiError::field(
                    "Idempotency-Key",
                    "must be 1 to 255 characters",
                ));
            }
            Some(k.to_owned())
        }
    };
    let batch = ingest::parse(
        format,
        &body,
        &query,
        state.settings.server.max_rows_per_job,
    )?;

    let pending = state.store.pending_rows().await?;
    if pending + batch.rows.len() as i64 > state.settings.server.max_pending_rows as i64 {
        return Err(ApiError::Unavailable {
            detail: format!("{pending} rows are waiting to be synced; try again later"),
            retry_after_secs: 30,
        });
    }

    let idempotency = idempotency_key.map(|key| {
        let mut h = Sha256::new();
        h.update(format.content_type().as_bytes());
        h.update([0]);
        h.update(batch.mode.as_str().as_bytes());
        h.update([u8::from(batch.dry_run)]);
        h.update(&body);
        IdempotencyClaim {
            key,
            body_sha256: hex::encode(h.finalize()),
            expires_at_ms: now_ms() + state.settings.store.idempotency_ttl_hours as i64 * 3_600_000,
        }
    });
    // The id `SetRequestIdLayer` gave this request (the client's `x-request-id` if it sent
    // one, else a generated one), the same the response carries: audit lines quote it.
    let request_id = request_id
        .as_ref()
        .and_then(|Extension(r)| r.header_value().to_str().ok())
        .or_else(|| headers.get("x-request-id").and_then(|v| v.to_str().ok()))
        .map(str::to_owned);
    let job_id = uuid::Uuid::now_v7().to_string();
    let events = batch
        .rows
        .iter()
        .filter_map(|r| {
            let defect = r.defect.as_deref()?;
            state.events.event(
                ROLE_SYNC_REJECTED,
                rejected_data(
                    &job_id,
                    r.line as i64,
                    Some((&r.external_id, &r.role_template, &r.license_tier)),
                    ReasonCode::MalformedRow.as_str(),
                    defect,
                ),
            )
        })
        .collect();
    let new = NewJob {
        id: job_id,
        events,
        mode: batch.mode,
        dry_run: batch.dry_run,
        request_id,
        policy_fingerprint: Some(state.policy.current().fingerprint()),
        idempotency,
    };
    let (status, job_id) = match state.store.create_job(&new, &batch.rows).await? {
        CreateJob::Created => {
            tracing::info!(job.id = %new.id, rows = batch.rows.len(), mode = new.mode.as_str(), key = %caller.key_name, "job accepted");
            (StatusCode::ACCEPTED, new.id)
        }
        CreateJob::Existing { job_id } => (StatusCode::OK, job_id),
        CreateJob::KeyConflict { job_id } => {
            return Err(ApiError::Unprocessable {
                detail: format!(
                    "this Idempotency-Key was used for job {job_id} with a different body"
                ),
                errors: Vec::new(),
            });
        }
    };
    let job = state
        .store
        .get_job(&job_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {job_id} not found")))?;
    // The planner is woken only once the job is read back, so a new job is answered as
    // `queued`, not in whatever state the planner has moved it to meanwhile.
    if status == StatusCode::ACCEPTED {
        state.pipeline.job_submitted();
    }
    let mut resp = (status, Json(job_view(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{job_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    outcome: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn limit(q: &ListQuery) -> ApiResult<i64> {
    match q.limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 1000")),
    }
}

/// `GET /v1/jobs`: newest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsRead)?;
    let status = match &q.status {
        None => None,
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| ApiError::field("status", format!("unknown status \"{s}\"")))?,
        ),
    };
    let limit = limit(&q)?;
    let jobs = state
        .store
        .list_jobs(status, limit, q.cursor.as_deref())
        .await?;
    let next = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|j| j.id.clone()))
        .flatten();
    Ok(Json(
        json!({"jobs": jobs.iter().map(job_view).collect::<Vec<_>>(), "next_cursor": next}),
    ))
}

/// `GET /v1/jobs/{id}`
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsRead)?;
    let job = find(&state, &id).await?;
    Ok(Json(job_view(&job)))
}

/// `GET /v1/jobs/{id}/items`: rows by line; filter by `outcome`.
pub async fn items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsRead)?;
    let _ = find(&state, &id).await?;
    let outcome = match &q.outcome {
        None => None,
        Some(s) => Some(
            Outcome::parse(s)
                .ok_or_else(|| ApiError::field("outcome", format!("unknown outcome \"{s}\"")))?,
        ),
    };
    let cursor = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor from a previous page"))?,
        ),
    };
    let limit = limit(&q)?;
    let items: Vec<ItemRecord> = state.store.list_items(&id, outcome, limit, cursor).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.line.to_string()))
        .flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

/// `POST /v1/jobs/{id}/cancel`: rows not yet written become `cancelled`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsWrite)?;
    let mut job = find(&state, &id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "job {id} is already {}",
            job.status.as_str()
        )));
    }
    job.status = JobStatus::Cancelled;
    let events: Vec<_> = state
        .events
        .event(JOB_FINISHED, pipeline::job_finished_data(&job))
        .into_iter()
        .collect();
    if state.store.cancel_job(&id, &events).await? {
        state
            .metrics
            .jobs_total
            .with_label_values(&["cancelled"])
            .inc();
        tracing::info!(job.id = %id, key = %caller.key_name, "job cancelled");
    }
    let job = find(&state, &id).await?;
    Ok(Json(job_view(&job)))
}

/// `POST /v1/jobs/{id}/approve` (`admin`): releases a job held in `awaiting_approval`.
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let job = find(&state, &id).await?;
    if job.status != JobStatus::AwaitingApproval {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}, not awaiting_approval",
            job.status.as_str()
        )));
    }
    if state.store.approve_job(&id).await? {
        tracing::info!(job.id = %id, key = %caller.key_name, "job approved");
        state.pipeline.deps().wake_claimer.notify_waiters();
    }
    let job = find(&state, &id).await?;
    Ok(Json(job_view(&job)))
}

async fn find(state: &AppState, id: &str) -> ApiResult<JobRecord> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

fn rfc3339(ms: Option<i64>) -> Value {
    match ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }) {
        Some(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .map(Value::String)
            .unwrap_or(Value::Null),
        None => Value::Null,
    }
}

/// The job as the API shows it (SPEC §3).
pub fn job_view(job: &JobRecord) -> Value {
    let end = job.finished_at_ms.unwrap_or_else(now_ms);
    let elapsed = job
        .started_at_ms
        .map(|s| (end - s).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    let done = job.counts.total - job.counts.pending;
    let rows_per_sec = if elapsed > 0.0 {
        (done as f64 / elapsed * 10.0).round() / 10.0
    } else {
        0.0
    };
    json!({
        "job_id": job.id,
        "status": job.status.as_str(),
        "mode": job.mode.as_str(),
        "dry_run": job.dry_run,
        "created_at": rfc3339(Some(job.created_at_ms)),
        "started_at": rfc3339(job.started_at_ms),
        "finished_at": rfc3339(job.finished_at_ms),
        "counts": job.counts,
        "users": {"total": job.users_total, "changed": job.users_changed, "unchanged": job.users_unchanged},
        "scim": {"requests": job.scim_requests, "retries": job.scim_retries, "rate_limited": job.scim_rate_limited},
        "estimate": job.estimate,
        "approval": job.approval,
        "paused_reason": job.paused_reason,
        "error": job.error,
        "policy_fingerprint": job.policy_fingerprint,
        "elapsed_secs": (elapsed * 10.0).round() / 10.0,
        "rows_per_sec": rows_per_sec,
    })
}
