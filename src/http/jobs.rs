//! `/v1/jobs`: submit batches, read jobs and their rows, cancel and approve.

use super::AppState;
use super::auth::{Caller, Scope};
use super::items_csv;
use super::views::{Batch, ItemList, ItemView, JobList, JobView};
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
use utoipa::IntoParams;

use tower_http::request_id::RequestId;

/// An NDJSON batch, for the document's examples.
pub(super) const NDJSON_EXAMPLE: &str = "{\"external_id\":\"EMP-1\",\"role_template\":\"Supervisor\",\"license_tier\":\"Supervisor\"}\n{\"external_id\":\"EMP-2\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}\n";
/// A CSV batch, for the document's examples.
pub(super) const CSV_EXAMPLE: &str = "external_id,role_template,license_tier\nEMP-1,Supervisor,Supervisor\nEMP-2,Agent,Standard Agent\n";

/// Submit a batch
///
/// The body by `Content-Type`: `application/json` (an envelope, or a bare array of assignments),
/// `application/x-ndjson` (one assignment per line) or `text/csv` (a header naming
/// `external_id`, `role_template`, `license_tier` in any order, and optionally `action`; other
/// columns are ignored, so a CSV of `GET /v1/jobs/{id}/items` can be sent back as it is).
///
/// Leavers: a row with `action` `revoke` (CSV column or JSON field; `assign`, the default,
/// otherwise) needs only `external_id`; its user keeps no managed role, whatever the mode
/// (protected and unmanaged roles stay). A user's rows must be all `assign` or all `revoke`
/// (else each is rejected, `conflicting_actions`). Another `action` word is that row's
/// rejection (`malformed_row`). With `roster=full` (query or envelope) the batch is the whole
/// list of managed users: every user with a desired state that it does not name gets a
/// `revoke` row (numbered after the body's last line). Leavers count toward the policy's
/// removal bounds in either mode; the job's `estimate.leavers` gives their number and a sample. gzip `Content-Encoding` is
/// accepted (`server.max_body_bytes` applies to the decoded body).
///
/// The body is received into a temporary file and parsed as a stream into one store
/// transaction: the whole batch is committed before the 202, or nothing is. A CSV row with the
/// wrong number of fields is that row's error (`malformed_row`), not the body's.
///
/// Options: `mode`, `dry_run` and `roster` may be given as query parameters for every format,
/// and in a JSON envelope; a dry run asked for in either place is a dry run, and a mode (or a
/// roster) given in both places must be the same (else 400 naming `query.mode` and
/// `body.mode`, or `query.roster` and `body.roster`).
///
/// Per record (config `[ingest]`): an NDJSON line over `max_record_bytes`, a role or tier over
/// `max_field_bytes`, a record of more than `max_fields` fields, a control character in any
/// field or an `external_id` over 256 characters is that row's rejection (`malformed_row`).
/// Rows of one user beyond `ingest.max_rows_per_user` are rejected with
/// `too_many_rows_for_user`. A job granting a role of the policy's `privileged_roles` waits in
/// `awaiting_approval` unless the key carries `roles:privileged`; a `replace` job, or a job with
/// leavers, removing roles from more users than the policy's approval bounds waits there too.
///
/// With an `Idempotency-Key` (scoped to the API key), the same key and body answer the job they
/// created (200) for `store.idempotency_ttl_hours`; the same key with another body is a 422.
/// Scope `jobs:write`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "submitJob",
    tag = "jobs",
    params(
        BatchQuery,
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            description = "Makes a retry safe: the same key and body answer the job they created. Visible ASCII, 1 to 255 characters.",
            example = "hr-export-2026-03-02"),
    ),
    request_body(
        description = "The batch, in one of three formats; gzip `Content-Encoding` accepted.",
        content(
            (Batch = "application/json"),
            (String = "application/x-ndjson", example = json!(NDJSON_EXAMPLE)),
            (String = "text/csv", example = json!(CSV_EXAMPLE)),
        )
    ),
    responses(
        (status = 202, description = "Accepted: the job, queued (or already running)", body = JobView,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "The job this `Idempotency-Key` created before, with the same body", body = JobView,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 400, description = "Malformed body, naming line and column or field; a CSV record or JSON element over `ingest.max_record_bytes` (named by its line); a CSV header of more than `ingest.max_fields` columns; `mode` or `roster` given in the query and the body with different values; a bad query parameter or `Idempotency-Key`"),
        (status = 403, description = "The key lacks `jobs:write`"),
        (status = 408, description = "The body took longer than `server.request_timeout_secs` to arrive"),
        (status = 413, description = "Body over `server.max_body_bytes` after decoding, more rows than `server.max_rows_per_job`, or a gzip body expanding more than `ingest.max_expansion_ratio` times (past its first MiB)"),
        (status = 415, description = "A `Content-Type` other than the three formats"),
        (status = 422, description = "This `Idempotency-Key` was used with another body"),
        (status = 429, description = "This caller (API key name, or token issuer and subject) already has `server.max_ingests_per_key` uploads in progress, or this address failed to authenticate too often (`auth.failures`)"),
        (status = 503, description = "Too many rows waiting to be synced (`server.max_pending_rows`), `server.max_ingests` uploads in progress, the service is shutting down, or the store is busy or unreachable"),
    )
)]
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
    let _slot = state.ingests.take(&caller.principal.bucket())?;
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
            Some(format!("{}\u{1f}{k}", caller.principal.bucket()))
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
    prefix.extend_from_slice(query.roster.as_deref().unwrap_or("").as_bytes());
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
                    state.events.event_as(
                        EventType::RoleSyncRejected,
                        RoleSyncRejected::new(&job_id, r.line as i64, ReasonCode::MalformedRow, defect)
                            .of_row(&r.external_id, &r.role_template, &r.license_tier),
                        Some(&caller.principal),
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
            roster: summary.roster,
            request_id,
            traceparent,
            policy_fingerprint: Some(state.policy.current().fingerprint()),
            privileged_allowed: caller.require(Scope::RolesPrivileged).is_ok(),
            submitted_by: Some(caller.principal.clone()),
            idempotency: idempotency_key.map(|key| IdempotencyClaim {
                key,
                body_sha256,
                expires_at_ms: now_ms()
                    + state.settings.store.idempotency_ttl_hours as i64 * 3_600_000,
            }),
        };
        let created = ingest.commit(&new, Some(max_pending)).await?;
        if created == CreateJob::Created {
            tracing::info!(rows, body_bytes = spooled.bytes, mode = new.mode.as_str(), actor = %caller.principal.label(), "job accepted");
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

/// `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only the jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Jobs per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/jobs/{id}/items`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// Only the rows with this outcome (`rejected`: the rows to fix and send again).
    #[param(value_type = Option<Outcome>)]
    outcome: Option<String>,
    /// Rows per page, 1 to 1000 (default 100); JSON only.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; JSON only.
    cursor: Option<String>,
}

/// A page's size: 1 to 1000, 100 when unstated.
fn limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 1000")),
    }
}

/// List jobs, newest first
///
/// A page of jobs, newest first; follow `next_cursor` for the next page (null on the last).
/// Scope `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "An unknown `status`, or a `limit` that is not an integer from 1 to 1000"),
        (status = 403, description = "The key lacks `jobs:read`"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<JobsQuery>,
) -> ApiResult<Json<JobList>> {
    caller.require(Scope::JobsRead)?;
    let status = match &q.status {
        None => None,
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| ApiError::field("status", format!("unknown status \"{s}\"")))?,
        ),
    };
    let limit = limit(q.limit)?;
    let jobs = state
        .store
        .list_jobs(status, limit, q.cursor.as_deref())
        .await?;
    let next = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|j| j.id.clone()))
        .flatten();
    let hold = state.scim.visible_hold_left();
    Ok(Json(JobList {
        jobs: jobs
            .iter()
            .map(|j| JobView::new(j).with_hold(hold))
            .collect(),
        next_cursor: next,
    }))
}

/// A job
///
/// Its status, counts per outcome, users, SCIM calls spent, the plan's estimate, why it waits
/// for approval or is paused, and the policy it was judged against. Scope `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id (`job_id`)")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "The id is not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `jobs:read`"),
        (status = 404, description = "No such job"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    caller.require(Scope::JobsRead)?;
    let job = find(&state, &id).await?;
    Ok(Json(
        JobView::new(&job).with_hold(state.scim.visible_hold_left()),
    ))
}

/// Per-row results by line
///
/// JSON pages by default. With `Accept: text/csv` (preferred to `application/json`), every row
/// (of the outcome asked for) as one streamed CSV file with the columns `line, external_id,
/// role_template, license_tier, outcome, reason, detail, action`; `limit` and `cursor` page the JSON
/// answer only. A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is written
/// with a `'` in front so a spreadsheet shows it as text; the batch reader takes that `'` off
/// again and ignores the extra columns, so the file can be fixed and submitted to
/// `POST /v1/jobs` as it is. Scope `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/items",
    operation_id = "listJobItems",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id (`job_id`)"), ItemsQuery),
    responses(
        (status = 200, description = "Rows by line (JSON), or every row as CSV (`Accept: text/csv`)",
            content(
                (ItemList = "application/json"),
                (String = "text/csv", example = json!("line,external_id,role_template,license_tier,outcome,reason,detail,action\n3,EMP-2,Astronaut,Standard Agent,rejected,unknown_role,\"unknown role \"\"Astronaut\"\"\",assign\n")),
            ),
            headers(("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"job-<id>-items.csv\"` (or `job-<id>-<outcome>.csv`)"))),
        (status = 400, description = "An unknown `outcome`, a `limit` that is not an integer from 1 to 1000, a `cursor` not from a previous page, or an id that is not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `jobs:read`"),
        (status = 404, description = "No such job"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
pub async fn items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ItemsQuery>,
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
    let limit = limit(q.limit)?;
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

/// Cancel a job; rows not yet written become cancelled
///
/// The job is `cancelled` when this answers, and no call of it still queued in the process that
/// answered is sent any more: only PATCHes already on the wire can still reach the target, and
/// each is recorded as what it did (`applied` or `failed`, with its webhook). Rows of chunks in
/// flight stay `pending` until their run records them; other replicas stop at their next lease
/// renewal (`store.lease_secs` / 3). `finished_at` is null until then; once it is set, the
/// counts are final and `job.finished` carries them. Scope `jobs:write`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id (`job_id`)")),
    responses(
        (status = 200, description = "The job, `cancelled`", body = JobView),
        (status = 400, description = "The id is not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `jobs:write`"),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job has already ended"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
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
    match pipeline::lifecycle::cancel(state.pipeline.deps(), &id, &caller.principal).await? {
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

/// Release a job held in awaiting_approval (scope admin)
///
/// The job's `approval` says why it waits (removals beyond the policy's bounds, privileged
/// roles). Released, it is queued to run as planned. Scope `admin`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/approve",
    operation_id = "approveJob",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id (`job_id`)")),
    responses(
        (status = 200, description = "The job, released", body = JobView),
        (status = 400, description = "The id is not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `admin`"),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job is not `awaiting_approval`"),
        (status = 503, description = "The store is busy or unreachable"),
    )
)]
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
    if state.store.approve_job(&id, &caller.principal).await? {
        tracing::info!(target: "audit", { job.id = %id, actor = %caller.principal.label() }, "job approved");
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
