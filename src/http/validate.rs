//! `POST /v1/validate`: judges a batch against the live policy; no job, no SCIM calls.

use super::AppState;
use super::auth::{Caller, Scope};
use super::views::{RowError, ValidationReport};
use crate::domain::ReasonCode;
use crate::error::{ApiError, ApiResult};
use crate::ingest::spool::read_bounded;
use crate::ingest::{self, BatchQuery, Format};
use crate::pipeline::validate_rows;
use crate::store::Reason;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};

pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BatchQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ValidationReport>> {
    // The scope is checked before a byte of the body is read.
    caller.require(Scope::JobsWrite)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!("Content-Type \"{content_type}\" is not supported"))
    })?;
    let body = read_bounded(body, state.settings.server.max_body_bytes).await?;
    let batch = ingest::parse(
        format,
        &body,
        &query,
        state.settings.server.max_rows_per_job,
    )?;
    Ok(Json(report(&state.policy.current(), &batch)))
}

/// The validation report shared by the API and `rolesync validate`.
pub fn report(policy: &crate::policy::Policy, batch: &ingest::Batch) -> ValidationReport {
    let (rejected, users) = validate_rows(policy, &batch.rows);
    let by_line: std::collections::HashMap<i64, &crate::domain::Assignment> =
        batch.rows.iter().map(|r| (r.line as i64, r)).collect();
    let errors: Vec<RowError> = rejected
        .iter()
        .map(|r| {
            let row = by_line.get(&r.line);
            // Every rejected row carries its reason; `MalformedRow` stands in should one not.
            let (code, message) = r
                .reason
                .clone()
                .unwrap_or((ReasonCode::MalformedRow, String::new()));
            RowError {
                line: r.line,
                external_id: row.map(|a| a.external_id.clone()),
                role_template: row.map(|a| a.role_template.clone()),
                license_tier: row.map(|a| a.license_tier.clone()),
                reason: Reason { code, message },
            }
        })
        .collect();
    ValidationReport {
        valid: errors.is_empty(),
        mode: batch.mode,
        dry_run: batch.dry_run,
        rows: batch.rows.len(),
        accepted_rows: batch.rows.len() - errors.len(),
        rejected_rows: errors.len(),
        users: users.len(),
        errors,
    }
}
