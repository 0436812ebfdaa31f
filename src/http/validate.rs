//! `POST /v1/validate`: judges a batch against the live policy; no job, no SCIM calls.
//!
//! Received like `POST /v1/jobs` (scope checked and an upload slot taken before a byte of the
//! body is read; spooled, streamed, the same per-record bounds), then judged like a job's
//! planning, page by page, from a scratch store deleted with the answer: memory stays bounded
//! whatever the body, and conflicts between rows of one user (tiers, separation of duties)
//! are found as they are for a job.

use super::AppState;
use super::auth::{Caller, Scope};
use super::views::{Batch, RowError, ValidationReport};
use crate::domain::{Assignment, Outcome, ReasonCode};
use crate::error::{ApiError, ApiResult};
use crate::ingest::spool::{Compressed, spool};
use crate::ingest::{self, BatchQuery, Format, Limits};
use crate::pipeline::judge_stored;
use crate::policy::Policy;
use crate::store::{NewJob, Reason, Store};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::{Extension, Json};

/// Rejected rows listed in a report (the first ones by line); the counts cover them all.
pub const MAX_LISTED_ERRORS: usize = 1000;

/// Validate a batch against the live policy; no job, no SCIM calls
///
/// Received like `POST /v1/jobs` (scope `jobs:write` checked and an upload slot taken before
/// the body is read; the same formats, options and limits), then judged page by page as a job's
/// planning would, separation of duties between rows of one user included. Lists the first
/// 1000 rejected rows by line; counts them all.
#[utoipa::path(
    post,
    path = "/v1/validate",
    operation_id = "validateBatch",
    tag = "jobs",
    params(BatchQuery),
    request_body(
        description = "The batch, in one of three formats (see `POST /v1/jobs`); gzip `Content-Encoding` accepted.",
        content(
            (Batch = "application/json"),
            (String = "application/x-ndjson", example = json!(super::jobs::NDJSON_EXAMPLE)),
            (String = "text/csv", example = json!(super::jobs::CSV_EXAMPLE)),
        )
    ),
    responses(
        (status = 200, description = "The report", body = ValidationReport),
        (status = 400, description = "Malformed body, naming line and column or field; a CSV record or JSON element over `ingest.max_record_bytes` (named by its line); a CSV header of more than `ingest.max_fields` columns; `mode` given in the query and the body with different values; a bad query parameter"),
        (status = 403, description = "The key lacks `jobs:write`"),
        (status = 408, description = "The body took longer than `server.request_timeout_secs` to arrive"),
        (status = 413, description = "Body over `server.max_body_bytes` after decoding, more rows than `server.max_rows_per_job`, or a gzip body expanding more than `ingest.max_expansion_ratio` times (past its first MiB)"),
        (status = 415, description = "A `Content-Type` other than the three formats"),
        (status = 429, description = "This caller (API key name, or token issuer and subject) already has `server.max_ingests_per_key` uploads in progress, or this address failed to authenticate too often (`auth.failures`)"),
        (status = 503, description = "`server.max_ingests` uploads in progress, or the store is busy or unreachable"),
    )
)]
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BatchQuery>,
    compressed: Option<Extension<Compressed>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ValidationReport>> {
    // The scope is checked, and a slot taken, before a byte of the body is read.
    caller.require(Scope::JobsWrite)?;
    let _slot = state.ingests.take(&caller.principal.bucket())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type \"{content_type}\" is not supported; use application/json, application/x-ndjson or text/csv"
        ))
    })?;
    let spooled = spool(body, &super::body_bounds(&state.settings, compressed), &[]).await?;
    let report = judge_file(
        &state.policy.current(),
        format,
        spooled.file,
        query,
        Limits::from_settings(&state.settings),
        state.settings.ingest.max_rows_per_user,
    )
    .await?;
    Ok(Json(report))
}

/// Receives a batch into a scratch store (a SQLite file in a temporary directory, gone when
/// this returns) and judges it as a job's planning would. Shared by `POST /v1/validate` and
/// `rolesync validate`.
pub async fn judge_file(
    policy: &Policy,
    format: Format,
    file: std::fs::File,
    query: BatchQuery,
    limits: Limits,
    max_rows_per_user: usize,
) -> Result<ValidationReport, ApiError> {
    let dir = tempfile::tempdir()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot create a scratch dir: {e}")))?;
    let url = format!("sqlite://{}", dir.path().join("validate.db").display());
    let store = Store::connect(&url, 2).await?;
    let result = judge_in(
        &store,
        policy,
        format,
        file,
        query,
        limits,
        max_rows_per_user,
    )
    .await;
    store.close().await;
    result
}

async fn judge_in(
    store: &Store,
    policy: &Policy,
    format: Format,
    file: std::fs::File,
    query: BatchQuery,
    limits: Limits,
    max_rows_per_user: usize,
) -> Result<ValidationReport, ApiError> {
    const JOB: &str = "validation";
    let mut ingest = store.begin_ingest(JOB).await?;
    let no_events = |_: &[Assignment]| Vec::new();
    let summary = ingest::receive(&mut ingest, file, format, query, limits, &no_events).await?;
    let new = NewJob {
        id: JOB.to_owned(),
        events: Vec::new(),
        mode: summary.mode,
        dry_run: summary.dry_run,
        // A validation's scratch store has no desired state: a roster adds no leaver there.
        roster: summary.roster,
        request_id: None,
        traceparent: None,
        policy_fingerprint: None,
        idempotency: None,
        privileged_allowed: false,
        submitted_by: None,
    };
    ingest.commit(&new, None).await?;
    let users = judge_stored(store, JOB, policy, max_rows_per_user).await?;
    let counts = store
        .get_job(JOB)
        .await?
        .map(|j| j.counts)
        .unwrap_or_default();
    let listed = store
        .list_items(JOB, Some(Outcome::Rejected), MAX_LISTED_ERRORS as i64, None)
        .await?;
    let errors: Vec<RowError> = listed
        .into_iter()
        .map(|item| RowError {
            line: item.line,
            external_id: Some(item.external_id),
            role_template: Some(item.role_template),
            license_tier: Some(item.license_tier),
            // Every rejected row carries its reason; `MalformedRow` stands in should one not.
            reason: item.reason.unwrap_or(Reason {
                code: ReasonCode::MalformedRow,
                message: String::new(),
            }),
        })
        .collect();
    let rejected = counts.rejected.max(0) as u64;
    let rows = counts.total.max(0) as u64;
    Ok(ValidationReport {
        valid: rejected == 0,
        mode: summary.mode,
        dry_run: summary.dry_run,
        rows,
        accepted_rows: rows - rejected.min(rows),
        rejected_rows: rejected,
        users,
        errors_truncated: rejected > errors.len() as u64,
        errors,
    })
}
