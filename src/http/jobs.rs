//! `/v1/jobs`: submit batches, read jobs and their rows, cancel and approve.

use super::AppState;
use super::auth::{Caller, Scope};
use super::items_csv;
use super::views::{ItemList, ItemView, JobList, JobView};
use crate::audit::events::RoleSyncRejected;
use crate::domain::Assignment;
use crate::domain::{EventType, JobStatus, Outcome, ReasonCode};
use crate::error::{ApiError, ApiResult};
use crate::ingest::spool::{Compressed, spool};
use crate::ingest::{self, BatchQuery, Format};
use crate::pipeline;
use crate::store::{CreateJob, IdempotencyClaim, ItemRecord, JobRecord, NewJob, now_ms};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;

use tower_http::request_id::RequestId;

/// `POST /v1/jobs`: receives the body into a spool file (bounded memory, any size), then
/// parses it as a stream into one store transaction, and answers 202 once it is committed.
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BatchQuery>,
    request_id: Option<Extension<RequestId>>,
    compressed: Option<Extension<Compressed>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.require(Scope::JobsWrite)?;
    // Held until the answer: before a byte of the body is read.
    let _slot = state.ingests.take(&caller.key_name)?;
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
            // Scoped to the API key that sent it: one client's key never answers for another
            // (nor tells it which jobs exist). The unit separator cannot occur in either part.
            Some(format!("{}\u{1f}{k}", caller.key_name))
        }
    };
    let max_pending = i64::try_from(state.settings.server.max_pending_rows).unwrap_or(i64::MAX);
    let queued = state.store.pending_rows().await?;
    if queued >= max_pending {
        return Err(backpressure(queued));
    }

    // Two submissions are the same when their type, query options and bytes are.
    let mut prefix = Vec::new();
    prefix.extend_from_slice(format.content_type().as_bytes());
    prefix.push(0);
    prefix.extend_from_slice(query.mode.as_deref().unwrap_or("").as_bytes());
    prefix.push(0);
    prefix.push(match query.dry_run {
        None => 2,
        Some(d) => u8::from(d),
    });
    let spooled = spool(
        body,
        &super::body_bounds(&state.settings, compressed),
        &prefix,
    )
    .await?;
    let body_sha256 = hex::encode(spooled.sha256);
    if let Some(key) = &idempotency_key
        && let Some((hash, job_id)) = state.store.find_idempotency_key(key).await?
    {
        // A replay is answered without reading the body again.
        return if hash == body_sha256 {
            existing_job(&state, &job_id, StatusCode::OK).await
        } else {
            Err(key_conflict(&job_id))
        };
    }

    // The id the access layer gave this request (the client's `x-request-id` if it sent
    // one, else a generated one), the same the response carries: audit lines quote it.
    let request_id = request_id
        .as_ref()
        .and_then(|Extension(r)| r.header_value().to_str().ok())
        .or_else(|| headers.get("x-request-id").and_then(|v| v.to_str().ok()))
        .map(str::to_owned);
    let job_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("ingest", job.id = %job_id, rows = tracing::field::Empty);
    // The job's later work (planning, chunks, their SCIM calls) joins the trace as children
    // of this span, whichever replica does it.
    let traceparent = crate::telemetry::traceparent_of(&span);
    let created = async {
        let mut ingest = state.store.begin_ingest(&job_id).await?;
        let events = |batch: &[Assignment]| -> Vec<_> {
            batch
                .iter()
                .filter_map(|r| {
                    let defect = r.defect.as_deref()?;
                    state.events.event(
                        EventType::RoleSyncRejected,
                        RoleSyncRejected::new(&job_id, r.line as i64, ReasonCode::MalformedRow, defect)
                            .of_row(&r.external_id, &r.role_template, &r.license_tier),
                    )
                })
                .collect()
        };
        let limits = ingest::Limits::from_settings(&state.settings);
        let summary =
            ingest::receive(&mut ingest, spooled.file, format, query, limits, &events).await?;
        let rows = ingest.rows();
        tracing::Span::current().record("rows", rows);
        let new = NewJob {
            id: job_id.clone(),
            events: Vec::new(),
            mode: summary.mode,
            dry_run: summary.dry_run,
            request_id,
            traceparent,
            policy_fingerprint: Some(state.policy.current().fingerprint()),
            privileged_allowed: caller.require(Scope::RolesPrivileged).is_ok(),
            idempotency: idempotency_key.map(|key| IdempotencyClaim {
                key,
                body_sha256,
                expires_at_ms: now_ms()
                    + state.settings.store.idempotency_ttl_hours as i64 * 3_600_000,
            }),
        };
        let created = ingest.commit(&new, Some(max_pending)).await?;
        if created == CreateJob::Created {
            tracing::info!(rows, body_bytes = spooled.bytes, mode = new.mode.as_str(), key = %caller.key_name, "job accepted");
        }
        Ok::<_, ApiError>(created)
    }
    .instrument(span)
    .await?;
    let (status, job_id) = match created {
        CreateJob::Created => (StatusCode::ACCEPTED, job_id),
        CreateJob::Existing { job_id } => (StatusCode::OK, job_id),
        CreateJob::KeyConflict { job_id } => return Err(key_conflict(&job_id)),
        CreateJob::Backpressure { queued } => return Err(backpressure(queued)),
    };
    // The planner is woken only once the job is read back, so a new job is usually answered
    // `queued` (its once-a-second poll may still have picked it up: then `running`).
    existing_job(&state, &job_id, status).await
}

async fn existing_job(state: &AppState, job_id: &str, status: StatusCode) -> ApiResult<Response> {
    let job = state
        .store
        .get_job(job_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {job_id} not found")))?;
    if status == StatusCode::ACCEPTED {
        state.pipeline.job_submitted();
    }
    let mut resp = (status, Json(JobView::new(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{job_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

fn key_conflict(job_id: &str) -> ApiError {
    ApiError::Unprocessable {
        detail: format!("this Idempotency-Key was used for job {job_id} with a different body"),
        errors: Vec::new(),
    }
}

fn backpressure(queued: i64) -> ApiError {
    ApiError::Unavailable {
        detail: format!(
            "{queued} rows are waiting to be synced (server.max_pending_rows); try again later"
        ),
        retry_after_secs: 30,
    }
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
) -> ApiResult<Json<JobList>> {
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
    Ok(Json(JobList {
        jobs: jobs.iter().map(JobView::new).collect(),
        next_cursor: next,
    }))
}

/// `GET /v1/jobs/{id}`
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    caller.require(Scope::JobsRead)?;
    let job = find(&state, &id).await?;
    Ok(Json(JobView::new(&job)))
}

/// `GET /v1/jobs/{id}/items`: rows by line; filter by `outcome`. With `Accept: text/csv`, every
/// row (of that outcome) as one streamed CSV file (`items_csv`); `limit` and `cursor` page the
/// JSON answer only.
pub async fn items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Scope::JobsRead)?;
    let job = find(&state, &id).await?;
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
    if items_csv::wants_csv(&headers) {
        return Ok(items_csv::response(state.store.clone(), job.id, outcome));
    }
    let items: Vec<ItemRecord> = state.store.list_items(&id, outcome, limit, cursor).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.line.to_string()))
        .flatten();
    Ok(Json(ItemList {
        items: items.into_iter().map(ItemView::new).collect(),
        next_cursor: next,
    })
    .into_response())
}

/// `POST /v1/jobs/{id}/cancel`: the job is `cancelled` at once and, before this answers, no
/// call of it that is still queued in this process is sent any more. Rows no write was sent for
/// become `cancelled`; rows whose write is in flight keep `pending` until the write is recorded
/// (the answer's `finished_at` is null until then, see `lifecycle::cancel`).
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    caller.require(Scope::JobsWrite)?;
    let job = find(&state, &id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "job {id} is already {}",
            job.status.as_str()
        )));
    }
    match pipeline::lifecycle::cancel(state.pipeline.deps(), &id, &caller.key_name).await? {
        Some(job) => Ok(Json(JobView::new(&job))),
        // It ended between the read above and the cancel.
        None => {
            let job = find(&state, &id).await?;
            Err(ApiError::Conflict(format!(
                "job {id} is already {}",
                job.status.as_str()
            )))
        }
    }
}

/// `POST /v1/jobs/{id}/approve` (`admin`): releases a job held in `awaiting_approval`.
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
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
    Ok(Json(JobView::new(&job)))
}

async fn find(state: &AppState, id: &str) -> ApiResult<JobRecord> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}
