//! The bodies the API answers with, as typed structs: what a client reads is declared here, once,
//! and built from the store's records by constructors. (Problem bodies are `error::Problem`.)

use crate::domain::{Approval, Counts, Estimate, JobKind, JobStatus, Mode, Outcome, PausedReason};
use crate::store::{ItemRecord, JobRecord, Reason, now_ms};
use serde::Serialize;

/// A job: `GET /v1/jobs/{id}`, the answer to a submission, a cancel or an approval.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    /// `sync` (a submitted batch), `revert` or `reconcile`.
    pub kind: JobKind,
    pub status: JobStatus,
    /// For a revert, the mode of the job it reverts.
    pub mode: Mode,
    pub dry_run: bool,
    /// A revert: the job it reverts.
    pub original_job_id: Option<String>,
    /// The latest real (not dry-run) revert of this job.
    pub reverted_by: Option<String>,
    /// A revert: whether it applies the inverse delta to users changed since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// RFC 3339.
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub counts: Counts,
    pub users: UsersView,
    pub scim: ScimView,
    /// The plan's figures: users, read strategy and calls expected (set once planned).
    pub estimate: Option<Estimate>,
    /// Why a job is held in `awaiting_approval`, and the bounds it crossed.
    pub approval: Option<Approval>,
    /// Set while the job is `paused`.
    pub paused_reason: Option<PausedReason>,
    /// Why a job `failed`.
    pub error: Option<String>,
    pub policy_fingerprint: Option<String>,
    pub elapsed_secs: f64,
    pub rows_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsersView {
    pub total: i64,
    pub changed: i64,
    pub unchanged: i64,
}

/// SCIM calls spent by the job so far.
#[derive(Debug, Clone, Serialize)]
pub struct ScimView {
    pub requests: i64,
    pub retries: i64,
    pub rate_limited: i64,
}

impl JobView {
    pub fn new(job: &JobRecord) -> JobView {
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
        JobView {
            job_id: job.id.clone(),
            kind: job.kind,
            status: job.status,
            mode: job.mode,
            dry_run: job.dry_run,
            original_job_id: job.original_job_id.clone(),
            reverted_by: job.reverted_by.clone(),
            force: (job.kind == JobKind::Revert).then_some(job.revert_force),
            created_at: rfc3339(Some(job.created_at_ms)),
            started_at: rfc3339(job.started_at_ms),
            finished_at: rfc3339(job.finished_at_ms),
            counts: job.counts.clone(),
            users: UsersView {
                total: job.users_total,
                changed: job.users_changed,
                unchanged: job.users_unchanged,
            },
            scim: ScimView {
                requests: job.scim_requests,
                retries: job.scim_retries,
                rate_limited: job.scim_rate_limited,
            },
            estimate: job.estimate.clone(),
            approval: job.approval.clone(),
            paused_reason: job.paused_reason,
            error: job.error.clone(),
            policy_fingerprint: job.policy_fingerprint.clone(),
            elapsed_secs: (elapsed * 10.0).round() / 10.0,
            rows_per_sec,
        }
    }
}

/// `GET /v1/jobs`: newest first; `next_cursor` is null on the last page.
#[derive(Debug, Clone, Serialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

/// One submitted row and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    pub line: i64,
    pub external_id: String,
    pub role_template: String,
    pub license_tier: String,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    /// The user's id in the target, once found.
    pub user_id: Option<String>,
    pub roles_added: Option<Vec<String>>,
    pub roles_removed: Option<Vec<String>>,
    /// Dry runs only: the permissions the change would add and remove.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_added: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_removed: Option<Vec<String>>,
    /// The user's whole role set before and after the write (`applied`) or the planned write
    /// (`planned`): what a revert puts back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_before: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_after: Option<Vec<String>>,
}

impl ItemView {
    pub fn new(item: ItemRecord) -> ItemView {
        ItemView {
            line: item.line,
            external_id: item.external_id,
            role_template: item.role_template,
            license_tier: item.license_tier,
            outcome: item.outcome,
            reason: item.reason,
            user_id: item.user_id,
            roles_added: item.roles_added,
            roles_removed: item.roles_removed,
            permissions_added: item.permissions_added,
            permissions_removed: item.permissions_removed,
            roles_before: item.roles_before,
            roles_after: item.roles_after,
        }
    }
}

/// `GET /v1/jobs/{id}/items`: by line; `next_cursor` is null on the last page.
#[derive(Debug, Clone, Serialize)]
pub struct ItemList {
    pub items: Vec<ItemView>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/validate` and `rolesync validate`: the batch judged against the policy.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub valid: bool,
    pub mode: Mode,
    pub dry_run: bool,
    pub rows: u64,
    pub accepted_rows: u64,
    pub rejected_rows: u64,
    pub users: u64,
    /// The first rejected rows by line (at most 1000); `errors_truncated` when there are more.
    pub errors: Vec<RowError>,
    pub errors_truncated: bool,
}

/// A row the policy refused, echoed with its reason.
#[derive(Debug, Clone, Serialize)]
pub struct RowError {
    pub line: i64,
    pub external_id: Option<String>,
    pub role_template: Option<String>,
    pub license_tier: Option<String>,
    pub reason: Reason,
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms?) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}
