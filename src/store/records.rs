//! Records the store reads and writes. `*Row` types mirror table columns; `*Record` types are
//! the validated domain view of them.

use super::StoreError;
use crate::domain::{
    Action, Approval, Counts, Estimate, JobKind, JobStatus, Mode, Outcome, PausedReason, Principal,
    ReasonCode, Roster,
};

/// A job to store (`Ingest::commit`): what it needs besides its rows.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub id: String,
    pub mode: Mode,
    pub dry_run: bool,
    /// `full`: the managed users the batch does not name get a `revoke` row at commit.
    pub roster: Roster,
    pub request_id: Option<String>,
    /// The W3C `traceparent` of the submitting request's ingest span, if traces are on.
    pub traceparent: Option<String>,
    pub policy_fingerprint: Option<String>,
    pub idempotency: Option<IdempotencyClaim>,
    /// The submitting key carries `roles:privileged`.
    pub privileged_allowed: bool,
    /// `role_sync.rejected` of the rows that could not be read, stored with the job.
    pub events: Vec<OutboxEvent>,
    /// Who submitted it.
    pub submitted_by: Option<Principal>,
}

#[derive(Debug, Clone)]
pub(crate) struct IdempotencyClaim {
    pub key: String,
    pub body_sha256: String,
    pub expires_at_ms: i64,
}

/// One page of a job's plan (see `Store::save_plan_page`).
#[derive(Debug, Default)]
pub(crate) struct PlanPage {
    /// The first page of this planning: clears what an abandoned one left.
    pub first: bool,
    pub rejected: Vec<RowResult>,
    /// Chunk number and the lines of its rows in this page; all rows of a user are in one
    /// chunk.
    pub chunks: Vec<(i64, Vec<i64>)>,
    /// `role_sync.rejected` of the rejected rows.
    pub events: Vec<OutboxEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CreateJob {
    Created,
    /// More rows than `server.max_pending_rows` would be queued: nothing was stored.
    Backpressure {
        queued: i64,
    },
    /// The key was used before with the same body: this is that job.
    Existing {
        job_id: String,
    },
    /// The key was used before with another body.
    KeyConflict {
        job_id: String,
    },
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    status: String,
    mode: String,
    dry_run: i64,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    updated_at_ms: i64,
    planned: i64,
    #[allow(dead_code)]
    lease_owner: Option<String>,
    #[allow(dead_code)]
    lease_until_ms: Option<i64>,
    c_total: i64,
    c_pending: i64,
    c_rejected: i64,
    c_applied: i64,
    c_unchanged: i64,
    c_not_found: i64,
    c_failed: i64,
    c_cancelled: i64,
    c_planned: i64,
    users_total: i64,
    users_changed: i64,
    users_unchanged: i64,
    scim_requests: i64,
    scim_retries: i64,
    scim_rate_limited: i64,
    paused_reason: Option<String>,
    error: Option<String>,
    estimate: Option<String>,
    approval: Option<String>,
    policy_fingerprint: Option<String>,
    request_id: Option<String>,
    privileged_allowed: i64,
    traceparent: Option<String>,
    kind: String,
    original_job_id: Option<String>,
    reverted_by: Option<String>,
    revert_force: i64,
    reason: Option<String>,
    submitted_by: Option<String>,
    approved_by: Option<String>,
    cancelled_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    pub mode: Mode,
    pub dry_run: bool,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub updated_at_ms: i64,
    pub planned: bool,
    pub counts: Counts,
    pub users_total: i64,
    pub users_changed: i64,
    pub users_unchanged: i64,
    pub scim_requests: i64,
    pub scim_retries: i64,
    pub scim_rate_limited: i64,
    pub paused_reason: Option<PausedReason>,
    pub error: Option<String>,
    pub estimate: Option<Estimate>,
    pub approval: Option<Approval>,
    pub policy_fingerprint: Option<String>,
    pub request_id: Option<String>,
    /// The submitting key carried `roles:privileged`.
    pub privileged_allowed: bool,
    /// Where the job's work joins the submitting request's trace (`telemetry::parent`).
    pub traceparent: Option<String>,
    pub kind: JobKind,
    /// A revert: the job it reverts.
    pub original_job_id: Option<String>,
    /// The latest real (not dry-run) revert of this job.
    pub reverted_by: Option<String>,
    /// A revert applies the inverse delta to users changed since (`?force=true`).
    pub revert_force: bool,
    /// Why a generated job was started when no person asked for it (the drift feed).
    pub reason: Option<String>,
    /// Who submitted the job (a key, a token, rolesync's schedule); None before migration 0013.
    pub submitted_by: Option<Principal>,
    pub approved_by: Option<Principal>,
    pub cancelled_by: Option<Principal>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let status = JobStatus::parse(&r.status)
            .ok_or_else(|| StoreError::Corrupt(format!("job {}: status {}", r.id, r.status)))?;
        let mode = Mode::parse(&r.mode)
            .ok_or_else(|| StoreError::Corrupt(format!("job {}: mode {}", r.id, r.mode)))?;
        let kind = JobKind::parse(&r.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("job {}: kind {}", r.id, r.kind)))?;
        Ok(JobRecord {
            status,
            mode,
            dry_run: r.dry_run != 0,
            created_at_ms: r.created_at_ms,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            updated_at_ms: r.updated_at_ms,
            planned: r.planned != 0,
            counts: Counts {
                total: r.c_total,
                pending: r.c_pending,
                rejected: r.c_rejected,
                applied: r.c_applied,
                unchanged: r.c_unchanged,
                not_found: r.c_not_found,
                failed: r.c_failed,
                cancelled: r.c_cancelled,
                planned: r.c_planned,
                // Not a column: counted from the items by `Store::get_job`.
                awaiting_user: 0,
                scheduled: 0,
            },
            users_total: r.users_total,
            users_changed: r.users_changed,
            users_unchanged: r.users_unchanged,
            scim_requests: r.scim_requests,
            scim_retries: r.scim_retries,
            scim_rate_limited: r.scim_rate_limited,
            paused_reason: r.paused_reason.as_deref().and_then(PausedReason::parse),
            error: r.error,
            estimate: r.estimate.and_then(|s| serde_json::from_str(&s).ok()),
            approval: r.approval.and_then(|s| serde_json::from_str(&s).ok()),
            policy_fingerprint: r.policy_fingerprint,
            request_id: r.request_id,
            privileged_allowed: r.privileged_allowed != 0,
            traceparent: r.traceparent,
            kind,
            original_job_id: r.original_job_id,
            reverted_by: r.reverted_by,
            revert_force: r.revert_force != 0,
            reason: r.reason,
            submitted_by: r.submitted_by.as_deref().and_then(Principal::from_json),
            approved_by: r.approved_by.as_deref().and_then(Principal::from_json),
            cancelled_by: r.cancelled_by.as_deref().and_then(Principal::from_json),
            id: r.id,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ItemRow {
    #[allow(dead_code)]
    job_id: String,
    line: i64,
    external_id: String,
    role_template: String,
    license_tier: String,
    outcome: String,
    reason_code: Option<String>,
    reason_message: Option<String>,
    user_id: Option<String>,
    roles_added: Option<String>,
    roles_removed: Option<String>,
    permissions_added: Option<String>,
    permissions_removed: Option<String>,
    chunk_no: Option<i64>,
    intent: i64,
    attempts: i64,
    roles_before: Option<String>,
    roles_after: Option<String>,
    desired_roles: Option<String>,
    expected_roles: Option<String>,
    action: String,
    awaiting_since_ms: Option<i64>,
    effective_at_ms: Option<i64>,
}

/// Why a row did not succeed: a code from a closed list, and a sentence for people.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"code": "unknown_role", "message": "unknown role \"Astronaut\""}))]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
}

/// One row's result, as `GET /v1/jobs/{id}/items` lists it (through `http::views::ItemView`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemRecord {
    pub line: i64,
    pub external_id: String,
    pub role_template: String,
    pub license_tier: String,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub user_id: Option<String>,
    pub roles_added: Option<Vec<String>>,
    pub roles_removed: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_added: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_removed: Option<Vec<String>>,
    #[serde(skip)]
    pub chunk_no: Option<i64>,
    /// A write for this row's user was sent by an earlier attempt of its chunk.
    #[serde(skip)]
    pub intent: bool,
    /// Chunk runs in which this row's user failed for a reason that may pass.
    #[serde(skip)]
    pub attempts: i64,
    /// The user's roles before and after this job's write (`applied`), or the write a dry run
    /// plans (`planned`): what a revert puts back.
    pub roles_before: Option<Vec<String>>,
    pub roles_after: Option<Vec<String>>,
    /// A generated row (revert, reconcile): the roles to reach.
    #[serde(skip)]
    pub desired_roles: Option<Vec<String>>,
    /// A revert's row: the roles the reverted job left the user with.
    #[serde(skip)]
    pub expected_roles: Option<Vec<String>>,
    /// `revoke` for a leaver's row (sent so, or generated for a roster `full`).
    pub action: Action,
    /// A pending row whose user is not in the target yet: when the wait for the account began.
    #[serde(skip)]
    pub awaiting_since_ms: Option<i64>,
    /// Not applied before this time (`effective_at`, ms): `scheduled` until then.
    #[serde(skip)]
    pub effective_at_ms: Option<i64>,
}

impl TryFrom<ItemRow> for ItemRecord {
    type Error = StoreError;

    fn try_from(r: ItemRow) -> Result<Self, StoreError> {
        let outcome = Outcome::parse(&r.outcome).ok_or_else(|| {
            StoreError::Corrupt(format!("item line {}: outcome {}", r.line, r.outcome))
        })?;
        let list = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok());
        Ok(ItemRecord {
            line: r.line,
            external_id: r.external_id,
            role_template: r.role_template,
            license_tier: r.license_tier,
            outcome,
            reason: match r.reason_code {
                None => None,
                Some(code) => Some(Reason {
                    code: ReasonCode::parse(&code).ok_or_else(|| {
                        StoreError::Corrupt(format!("item line {}: reason {code}", r.line))
                    })?,
                    message: r.reason_message.unwrap_or_default(),
                }),
            },
            user_id: r.user_id,
            roles_added: list(r.roles_added),
            roles_removed: list(r.roles_removed),
            permissions_added: list(r.permissions_added),
            permissions_removed: list(r.permissions_removed),
            chunk_no: r.chunk_no,
            intent: r.intent != 0,
            attempts: r.attempts,
            roles_before: list(r.roles_before),
            roles_after: list(r.roles_after),
            desired_roles: list(r.desired_roles),
            expected_roles: list(r.expected_roles),
            awaiting_since_ms: r.awaiting_since_ms,
            effective_at_ms: r.effective_at_ms,
            action: Action::parse(&r.action).ok_or_else(|| {
                StoreError::Corrupt(format!("item line {}: action {}", r.line, r.action))
            })?,
        })
    }
}

/// A row leaving `pending`.
#[derive(Debug, Clone)]
pub struct RowResult {
    pub line: i64,
    pub outcome: Outcome,
    pub reason: Option<(ReasonCode, String)>,
    pub user_id: Option<String>,
    pub roles_added: Option<Vec<String>>,
    pub roles_removed: Option<Vec<String>>,
    pub permissions_added: Option<Vec<String>>,
    pub permissions_removed: Option<Vec<String>>,
    /// The whole role sets around the write (or the planned write).
    pub roles_before: Option<Vec<String>>,
    pub roles_after: Option<Vec<String>>,
}

impl RowResult {
    pub(crate) fn rejected(line: i64, code: ReasonCode, message: impl Into<String>) -> RowResult {
        RowResult::outcome(line, Outcome::Rejected, Some((code, message.into())))
    }

    pub(crate) fn outcome(
        line: i64,
        outcome: Outcome,
        reason: Option<(ReasonCode, String)>,
    ) -> RowResult {
        RowResult {
            line,
            outcome,
            reason,
            user_id: None,
            roles_added: None,
            roles_removed: None,
            permissions_added: None,
            permissions_removed: None,
            roles_before: None,
            roles_after: None,
        }
    }
}

/// The planner's output for a job.
#[derive(Debug, Clone)]
pub(crate) struct JobPlan {
    /// `running`, or `awaiting_approval` to hold the chunks.
    pub status: JobStatus,
    pub users_total: i64,
    pub estimate: Option<Estimate>,
    pub approval: Option<Approval>,
    /// Calls the planner spent (org size, approval pre-flight reads).
    pub deltas: JobDeltas,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkClaim {
    pub job_id: String,
    pub chunk_no: i64,
    pub attempts: i64,
    /// The fencing token of this claim (`pipeline::fence`): every statement made for the run
    /// names it, and changes nothing once another claim took a newer one.
    pub fence: i64,
    /// The instant before the claim was sent: the lease is held for a lease from then.
    pub confirmed: tokio::time::Instant,
}

/// A chunk as one run holds it: (job, chunk, fence).
pub(crate) type HeldChunk = (String, i64, i64);

/// Counter deltas besides row outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobDeltas {
    pub users_changed: i64,
    pub users_unchanged: i64,
    pub scim_requests: i64,
    pub scim_retries: i64,
    pub scim_rate_limited: i64,
}

/// What a heartbeat learnt (`Store::renew_leases`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaseRenewal {
    /// Chunks whose lease was renewed under the fence their run holds.
    pub held: Vec<HeldChunk>,
    /// Chunks whose lease this process no longer holds under that fence: their runs must send
    /// nothing more and cannot commit.
    pub lost: Vec<HeldChunk>,
    /// Jobs no longer running (cancelled, failed): their runs stop sending.
    pub stopped_jobs: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ChunkDone {
    pub results: Vec<RowResult>,
    pub deltas: JobDeltas,
    pub events: Vec<OutboxEvent>,
    /// Rows left pending because their user failed for a reason that may pass: their
    /// `attempts` go up by one and the chunk is claimable again at `retry_at_ms`, not done.
    pub retry_lines: Vec<i64>,
    pub retry_at_ms: Option<i64>,
    /// Rows left pending because their user is not in the target yet (a joiner awaiting
    /// their account), with when the wait began: recorded in `awaiting_since_ms`. A chunk
    /// run only for them does not count towards the chunk's attempts.
    pub await_lines: Vec<(i64, i64)>,
    /// The earliest next lookup of those users, or date of the held ones.
    pub await_next_ms: Option<i64>,
    /// Rows held until their `effective_at`: pending, the chunk `ready` again at that time; a
    /// run only for them does not count towards the chunk's attempts either.
    pub held_lines: Vec<i64>,
    /// Desired-state changes of the chunk's users, committed with their outcomes.
    pub desired: Vec<DesiredUpdate>,
    /// Users a reconcile found drifted (`rolesync_reconcile_drifted_users_total`).
    pub drifted: u64,
    /// The audit lines of the chunk's users (`roles changed` of those recorded `applied`,
    /// `drift detected`, conflicts after a write): logged once the chunk is committed, never
    /// before (`audit::log`).
    pub audit: Vec<crate::audit::log::AuditLine>,
}

/// How a user's desired state moves with an outcome (`desired_state`): only ever in the
/// transaction that commits the outcome, so the table never claims what was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DesiredUpdate {
    /// A sync job applied (or found in place) `roles`, the user's expanded desired set: it
    /// becomes the desired state, set by `job_id`, and the one it replaces is kept as previous.
    Set {
        external_id: String,
        roles: Vec<String>,
        job_id: String,
    },
    /// A revert of `original_job_id` put the user back: if that job set the current desired
    /// state, the previous one comes back (set by `job_id`, the revert), and the one it
    /// replaces becomes previous, so a revert of the revert swaps them again.
    Revert {
        external_id: String,
        original_job_id: String,
        job_id: String,
    },
}

/// An audit event to deliver to each of `endpoints`.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// The `webhook-id`, stable across retries and restarts.
    pub event_id: String,
    pub event_type: String,
    /// The exact body to sign and send.
    pub payload: String,
    pub endpoints: Vec<String>,
    /// The W3C `traceparent` of the span the event was made in, if traces are on: its
    /// delivery joins that trace.
    pub traceparent: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct OutboxRow {
    event_id: String,
    endpoint: String,
    event_type: String,
    payload: String,
    status: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    last_error: Option<String>,
    created_at_ms: i64,
    delivered_at_ms: Option<i64>,
    #[allow(dead_code)]
    lease_until_ms: Option<i64>,
    batch_id: Option<String>,
    traceparent: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct OutboxRecord {
    pub event_id: String,
    pub endpoint: String,
    pub event_type: String,
    #[serde(skip)]
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// The batch this event was sent in (its `webhook-id`), when batching is on.
    pub batch_id: Option<String>,
    #[serde(skip)]
    pub traceparent: Option<String>,
}

impl From<OutboxRow> for OutboxRecord {
    fn from(r: OutboxRow) -> Self {
        OutboxRecord {
            event_id: r.event_id,
            endpoint: r.endpoint,
            event_type: r.event_type,
            payload: r.payload,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at_ms: r.next_attempt_at_ms,
            last_error: r.last_error,
            created_at_ms: r.created_at_ms,
            delivered_at_ms: r.delivered_at_ms,
            batch_id: r.batch_id,
            traceparent: r.traceparent,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum DeliveryResult {
    Delivered,
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    Dead {
        error: String,
    },
}

/// What the store holds now, for the gauges; read by `Store::gauges` in cheap aggregate
/// queries, shown by the metrics gauges.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreGauges {
    /// Jobs by status and, for paused jobs, the reason; with the sum of their pending rows and
    /// the creation time of the oldest.
    pub jobs: Vec<JobGroup>,
    pub outbox_pending: i64,
    pub outbox_oldest_pending_created_ms: Option<i64>,
    pub outbox_dead: i64,
    /// Users of running jobs awaiting their account (`rolesync_users_awaiting_account`).
    pub users_awaiting_account: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobGroup {
    pub status: JobStatus,
    pub paused_reason: Option<PausedReason>,
    pub count: i64,
    pub rows_pending: i64,
    pub oldest_created_ms: Option<i64>,
}
