//! The bodies the API takes and answers with, as typed structs: what a client sends or reads is
//! declared here, once, built from the store's records by constructors, and described in the
//! OpenAPI document by the same declarations (`ToSchema`). (Problem bodies are `error::Problem`;
//! the policy's are `policy::{PolicySummary, RoleDetail}`.)

use crate::domain::{
    Action, Approval, Counts, DeliveryStatus, Estimate, JobKind, JobStatus, Mode, Outcome,
    PausedReason, Principal, Roster,
};
use crate::store::{ItemRecord, JobRecord, OutboxRecord, Reason, StoreError, now_ms};
use serde::Serialize;
use utoipa::ToSchema;

/// A job: `GET /v1/jobs/{id}`, the answer to a submission, a cancel or an approval.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Job, example = json!({
    "job_id": "01938f4e-6a1b-7c3d-9e2f-0a1b2c3d4e5f",
    "status": "succeeded",
    "mode": "merge",
    "dry_run": false,
    "submitted_by": {"kind": "api_key", "name": "hr-system"},
    "approved_by": null,
    "cancelled_by": null,
    "created_at": "2026-03-02T09:14:07.123Z",
    "started_at": "2026-03-02T09:14:07.480Z",
    "finished_at": "2026-03-02T09:14:09.012Z",
    "counts": {"total": 3, "pending": 0, "rejected": 1, "applied": 1, "unchanged": 1,
               "not_found": 0, "failed": 0, "cancelled": 0, "planned": 0},
    "users": {"total": 2, "changed": 1, "unchanged": 1},
    "scim": {"requests": 3, "retries": 0, "rate_limited": 0},
    "estimate": {"strategy": "lookup", "reads": 3, "writes_max": 2, "eta_secs": 1, "lookups": 2,
                 "org_users": 120, "page_size": 100, "scan_pages": 2,
                 "requests_per_minute": 300, "privileged": null},
    "approval": {"required": false, "reasons": [], "users_losing_roles": null,
                 "threshold_users": null, "org_users": null, "max_removed_users": null,
                 "max_removal_fraction": null, "privileged": null},
    "paused_reason": null,
    "waiting": null,
    "error": null,
    "policy_fingerprint": "9f2c1a0b7e3d5c4a",
    "elapsed_secs": 1.5,
    "rows_per_sec": 2.0
}))]
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
    /// Who submitted the job: an API key (its name), a token (issuer, subject, name), or
    /// rolesync's schedule. Null for jobs stored before principals were recorded.
    pub submitted_by: Option<Principal>,
    /// Who released it from `awaiting_approval`.
    pub approved_by: Option<Principal>,
    /// Who cancelled it.
    pub cancelled_by: Option<Principal>,
    /// A revert: whether it applies the inverse delta to users changed since.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub force: Option<bool>,
    /// Why a job no person asked for was started: the drift feed's reconcile over the users it
    /// found changed by hand, or its fall back to a full scan (and why). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub reason: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// Set when the job has ended and its counts are final. A cancelled job may show
    /// `cancelled` with `finished_at` null for a moment: the writes in flight when it was
    /// cancelled are being recorded.
    #[schema(format = DateTime)]
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
    /// Set while the job is `queued` or `running` and the target holds rolesync's calls (its
    /// rate limit: a 429's `Retry-After`, a spent window's reset) for a wait of 2 s or more:
    /// why, and until when. Null otherwise. The answering replica's view: each replica paces
    /// its own calls, so another replica may show another wait.
    pub waiting: Option<Waiting>,
    /// Why a job `failed`.
    pub error: Option<String>,
    /// The policy the job was judged against (`GET /v1/policy` shows the one in force).
    pub policy_fingerprint: Option<String>,
    pub elapsed_secs: f64,
    pub rows_per_sec: f64,
}

/// The users of a job: all, those whose roles change, those already as asked.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = JobUsers)]
pub struct UsersView {
    pub total: i64,
    pub changed: i64,
    pub unchanged: i64,
}

/// SCIM calls spent by the job so far.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = JobScimCalls)]
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
            submitted_by: job.submitted_by.clone(),
            approved_by: job.approved_by.clone(),
            cancelled_by: job.cancelled_by.clone(),
            force: (job.kind == JobKind::Revert).then_some(job.revert_force),
            reason: job.reason.clone(),
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
            waiting: None,
            error: job.error.clone(),
            policy_fingerprint: job.policy_fingerprint.clone(),
            elapsed_secs: (elapsed * 10.0).round() / 10.0,
            rows_per_sec,
        }
    }
}

impl JobView {
    /// With `waiting` set from the hold on calls to the target (`ScimClient::visible_hold_left`),
    /// when the job is one the hold delays: `queued` or `running`. A paused job says why in
    /// `paused_reason`; one awaiting approval or ended makes no calls.
    pub fn with_hold(mut self, hold_left: Option<std::time::Duration>) -> JobView {
        let held = matches!(self.status, JobStatus::Queued | JobStatus::Running);
        self.waiting = hold_left.filter(|_| held).and_then(|left| {
            let until = time::OffsetDateTime::now_utc() + left;
            let until = until
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?;
            Some(Waiting {
                reason: WaitReason::RateLimited,
                until,
            })
        });
        self
    }
}

/// Why, and until when, a job's calls to the target are held.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = JobWaiting, example = json!({"reason": "rate_limited", "until": "2026-03-02T09:15:07.480Z"}))]
pub struct Waiting {
    pub reason: WaitReason,
    /// When the hold ends (RFC 3339), by the answering replica's clock.
    #[schema(format = DateTime)]
    pub until: String,
}

/// Why a job waits: `rate_limited`, the target's rate limit (a 429 or a spent window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    RateLimited,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::RateLimited => "rate_limited",
        }
    }
}

/// `GET /v1/jobs`: newest first; `next_cursor` is null on the last page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

/// One submitted row and what became of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Item, example = json!({
    "line": 3,
    "external_id": "EMP-2",
    "role_template": "Astronaut",
    "license_tier": "Standard Agent",
    "outcome": "rejected",
    "reason": {"code": "unknown_role", "message": "unknown role \"Astronaut\""},
    "user_id": null,
    "roles_added": null,
    "roles_removed": null
}))]
pub struct ItemView {
    pub line: i64,
    pub external_id: String,
    pub role_template: String,
    pub license_tier: String,
    /// `revoke` for a leaver's row (sent so, or added for a roster `full`).
    pub action: Action,
    pub outcome: Outcome,
    /// `awaiting_user`: when the wait for the user's account began (RFC 3339); the rows end
    /// `not_found` `sync.await_user_secs` after it unless the account appears.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, format = DateTime)]
    pub awaiting_since: Option<String>,
    /// The row's `effective_at` as sent (RFC 3339): `scheduled` until then, applied after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, format = DateTime)]
    pub effective_at: Option<String>,
    pub reason: Option<Reason>,
    /// The user's id in the target, once found.
    pub user_id: Option<String>,
    pub roles_added: Option<Vec<String>>,
    pub roles_removed: Option<Vec<String>>,
    /// Dry runs only: the permissions the change would add and remove.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub permissions_added: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub permissions_removed: Option<Vec<String>>,
    /// The user's whole role set before and after the write (`applied`) or the planned write
    /// (`planned`): what a revert puts back.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub roles_before: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub roles_after: Option<Vec<String>>,
}

impl ItemView {
    pub fn new(item: ItemRecord) -> ItemView {
        ItemView {
            line: item.line,
            external_id: item.external_id,
            role_template: item.role_template,
            license_tier: item.license_tier,
            action: item.action,
            // A pending row whose user awaits their account shows it.
            outcome: match (item.outcome, item.awaiting_since_ms, item.effective_at_ms) {
                (Outcome::Pending, _, Some(at)) if at > now_ms() => Outcome::Scheduled,
                (Outcome::Pending, Some(_), _) => Outcome::AwaitingUser,
                (o, _, _) => o,
            },
            effective_at: item.effective_at_ms.and_then(|ms| rfc3339(Some(ms))),
            awaiting_since: item.awaiting_since_ms.and_then(|ms| rfc3339(Some(ms))),
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
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemList {
    pub items: Vec<ItemView>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/validate` and `rolesync validate`: the batch judged against the policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "valid": false, "mode": "merge", "dry_run": false, "rows": 2, "accepted_rows": 1,
    "rejected_rows": 1, "users": 2,
    "errors": [{"line": 3, "external_id": "EMP-2", "role_template": "Astronaut",
                "license_tier": "Standard Agent",
                "reason": {"code": "unknown_role", "message": "unknown role \"Astronaut\""}}],
    "errors_truncated": false
}))]
pub struct ValidationReport {
    /// No row was rejected.
    pub valid: bool,
    pub mode: Mode,
    pub dry_run: bool,
    pub rows: u64,
    pub accepted_rows: u64,
    pub rejected_rows: u64,
    pub users: u64,
    /// The first rejected rows by line (at most 1000); `errors_truncated` when there are more.
    #[schema(max_items = 1000)]
    pub errors: Vec<RowError>,
    /// More rejected rows exist than are listed.
    pub errors_truncated: bool,
}

/// A row the policy refused, echoed with its reason.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowError {
    pub line: i64,
    pub external_id: Option<String>,
    pub role_template: Option<String>,
    pub license_tier: Option<String>,
    pub reason: Reason,
}

/// One webhook delivery: an audit event for one endpoint, and where its sending stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// The event's id (its `webhook-id` when sent alone).
    pub event_id: String,
    /// The endpoint's name (`webhooks.endpoints.name`).
    pub endpoint: String,
    /// An event type (`role_sync.completed`, `role_sync.rejected`, `role_sync.failed`,
    /// `job.finished`), or `batch`: a batch of events sent under its own id.
    #[schema(example = "role_sync.completed")]
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made since it was queued (or requeued).
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// The batch this event was sent in (its `webhook-id`), when batching is on.
    pub batch_id: Option<String>,
}

impl DeliveryView {
    /// A record whose status is not a known word is corrupt (as a row with an unknown outcome
    /// is): the store writes only known words.
    pub(crate) fn new(r: OutboxRecord) -> Result<DeliveryView, StoreError> {
        Ok(DeliveryView {
            status: DeliveryStatus::parse(&r.status).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "delivery of event {}: status {}",
                    r.event_id, r.status
                ))
            })?,
            event_type: r.event_type,
            event_id: r.event_id,
            endpoint: r.endpoint,
            attempts: r.attempts,
            next_attempt_at_ms: r.next_attempt_at_ms,
            last_error: r.last_error,
            created_at_ms: r.created_at_ms,
            delivered_at_ms: r.delivered_at_ms,
            batch_id: r.batch_id,
        })
    }
}

/// `GET /v1/webhooks/deliveries`: oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// `POST /v1/webhooks/deliveries/{id}/redeliver`: the deliveries queued again (the event's,
/// and those of the batch it was sent in).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Redelivery {
    pub event_id: String,
    #[schema(minimum = 1)]
    pub requeued: u64,
}

/// One row of a batch, as a client sends it: roles the user is to hold (`action` absent or
/// `assign`), or a leaver (`action` `revoke`, which needs only `external_id`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Assignment)]
pub enum AssignmentInput {
    Assign(AssignRow),
    Revoke(RevokeRow),
}

/// A row that gives its user a role.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "external_id": "EMP-1", "role_template": "Supervisor", "license_tier": "Supervisor"
}))]
pub struct AssignRow {
    /// The user's HR id (`externalId` in the target): 1 to 256 characters, no control
    /// characters.
    pub external_id: String,
    /// A catalog role of the policy.
    pub role_template: String,
    /// A license tier of the policy; it must allow the role.
    pub license_tier: String,
    /// `assign`, the default.
    #[schema(required = false, nullable = false)]
    pub action: Option<AssignAction>,
    /// When the row takes effect (RFC 3339 with an offset, e.g. `2026-04-01T08:00:00Z`; the
    /// CSV column `effective_at`): held `scheduled` until then and applied then, by any
    /// replica, once. Absent or empty: at once. Malformed: the row is rejected at submission
    /// (`malformed_row`, naming `effective_at`).
    #[schema(required = false, nullable = false, format = DateTime)]
    pub effective_at: Option<String>,
}

/// A leaver's row: the user keeps no role the policy manages (protected roles such as
/// `Employee` and roles the policy does not manage stay), whatever the batch's mode. A user's
/// rows in one batch are all `assign` or all `revoke`: mixed, every row of that user is
/// rejected (`conflicting_actions`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"external_id": "EMP-9", "action": "revoke"}))]
pub struct RevokeRow {
    /// The user's HR id (`externalId` in the target).
    pub external_id: String,
    pub action: RevokeAction,
    /// Ignored.
    #[schema(required = false, nullable = false)]
    pub role_template: Option<String>,
    /// Ignored.
    #[schema(required = false, nullable = false)]
    pub license_tier: Option<String>,
    /// A leaver's last day: the roles are taken away at this time (e.g. the end of the day,
    /// `2026-03-31T23:59:59+01:00`), not before.
    #[schema(required = false, nullable = false, format = DateTime)]
    pub effective_at: Option<String>,
}

/// The `action` of a row that gives a role.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AssignAction {
    Assign,
}

/// The `action` of a leaver's row.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RevokeAction {
    Revoke,
}

/// A batch as a JSON envelope: the rows and their options. (`mode` and `dry_run` may also be
/// given as query parameters.)
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "mode": "merge", "dry_run": true,
    "assignments": [
        {"external_id": "EMP-1", "role_template": "Supervisor", "license_tier": "Supervisor"},
        {"external_id": "EMP-2", "role_template": "Agent", "license_tier": "Standard Agent"}
    ]
}))]
#[serde(deny_unknown_fields)]
pub struct BatchEnvelope {
    /// `merge` (the default) adds the roles asked for; `replace` also removes the managed
    /// roles not asked for.
    pub mode: Option<Mode>,
    /// Judge and plan, read the target, write nothing.
    pub dry_run: Option<bool>,
    /// `full`: the batch names every managed user; a managed user (one with a desired state)
    /// it does not name is a leaver and loses every managed role. `partial` (the default):
    /// only the users named change.
    pub roster: Option<Roster>,
    pub assignments: Vec<AssignmentInput>,
}

/// A JSON batch: an envelope, or a bare array of assignments (its options then come from the
/// query).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Batch {
    Envelope(BatchEnvelope),
    Rows(Vec<AssignmentInput>),
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    pub status: HealthStatus,
    /// Why the process is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Unhealthy,
}

/// `GET /readyz`: each check, and the verdict.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "status": "ready",
    "checks": {"store": "ok", "policy": {"status": "ok"}, "shutting_down": false, "target": "ok"}
}))]
pub struct Readiness {
    pub status: ReadyStatus,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadinessChecks {
    pub store: StoreCheck,
    pub policy: PolicyCheck,
    pub shutting_down: bool,
    /// `ok`, or why work for the target is paused (it does not make the service unready).
    pub target: TargetCheck,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreCheck {
    Ok,
    Unreachable,
}

/// The policy file's last reload; when it failed, the previous policy stays in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyCheck {
    pub status: PolicyReload,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyReload {
    Ok,
    ReloadFailed,
}

/// `ok`, or the reason work for the target is paused.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TargetCheck {
    Ok(TargetOk),
    Paused(PausedReason),
}

/// The word `ok`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetOk {
    Ok,
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms?) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}
