use super::vocabulary::{ApprovalReason, ReadMethod, WriteApi};
use serde::{Deserialize, Serialize};

vocabulary! {
    /// Lifecycle of a job: queued → running (↔ paused) → a terminal status; a job whose plan
    /// crosses the approval bounds waits in `awaiting_approval` first.
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        /// The target is unreachable; the job resumes by itself.
        Paused = "paused",
        AwaitingApproval = "awaiting_approval",
        Succeeded = "succeeded",
        CompletedWithErrors = "completed_with_errors",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    /// A terminal job never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::CompletedWithErrors
                | JobStatus::Failed
                | JobStatus::Cancelled
        )
    }
}

vocabulary! {
    /// What a job does, and where its rows come from.
    #[derive(Default)]
    pub enum JobKind {
        /// A batch submitted to `POST /v1/jobs`: rows from the HR system.
        #[default]
        Sync = "sync",
        /// Puts back what another job changed (`POST /v1/jobs/{id}/revert`): one row per user
        /// that job applied, made from its recorded roles before and after.
        Revert = "revert",
        /// Applies the desired state again (`POST /v1/reconcile`, `[reconcile] schedule`): one
        /// row per managed user, made from the desired-state table.
        Reconcile = "reconcile",
    }
}

vocabulary! {
    /// Outcome of one submitted row.
    pub enum Outcome {
        Pending = "pending",
        Rejected = "rejected",
        Applied = "applied",
        Unchanged = "unchanged",
        NotFound = "not_found",
        Failed = "failed",
        Cancelled = "cancelled",
        Planned = "planned",
        /// Never stored: a `pending` row whose user is not in the target yet and is being
        /// waited for (`sync.await_user_secs`), as the API shows and filters it.
        AwaitingUser = "awaiting_user",
        /// Never stored: a `pending` row dated later (`effective_at`), held until then.
        Scheduled = "scheduled",
    }
}

impl Outcome {
    /// Outcomes that count as success for the job's final status.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Applied | Outcome::Unchanged | Outcome::Planned
        )
    }
}

vocabulary! {
    /// Machine-readable reason for a row that did not succeed.
    pub enum ReasonCode {
        UnknownLicenseTier = "unknown_license_tier",
        UnknownRole = "unknown_role",
        /// The row's roles, after the policy's expansion, include a role the target org does
        /// not have by that exact name (a typo, a role renamed in Genesys). Found at planning
        /// from the org's role catalog, before any call for the user.
        UnknownTargetRole = "unknown_target_role",
        RoleNotEntitled = "role_not_entitled",
        SodConflict = "sod_conflict",
        ConflictingLicenseTier = "conflicting_license_tier",
        InvalidExternalId = "invalid_external_id",
        DuplicateRow = "duplicate_row",
        UserNotFound = "user_not_found",
        AmbiguousUser = "ambiguous_user",
        ScimRejected = "scim_rejected",
        RetriesExhausted = "retries_exhausted",
        MalformedRow = "malformed_row",
        TooManyRowsForUser = "too_many_rows_for_user",
        JobFailed = "job_failed",
        Cancelled = "cancelled",
        /// A revert left the user alone: their roles changed since the job being reverted
        /// (without `force`).
        ChangedSince = "changed_since",
        /// A user's rows in one batch mix `action` `assign` and `revoke`: the batch does not
        /// say whether the user stays, so none of their rows is applied.
        ConflictingActions = "conflicting_actions",
    }
}

/// Per-outcome row counts of a job (`counts` in the API); they always add up to `total`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    pub rejected: i64,
    pub applied: i64,
    pub unchanged: i64,
    pub not_found: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub planned: i64,
    /// Users (not rows) among `pending` waiting for their account to appear in the target
    /// (`sync.await_user_secs`); not part of `total`.
    #[serde(default)]
    pub awaiting_user: i64,
    /// Rows among `pending` held until their `effective_at`; not part of `total`.
    #[serde(default)]
    pub scheduled: i64,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome, n: i64) {
        let slot = match outcome {
            Outcome::Pending => &mut self.pending,
            Outcome::Rejected => &mut self.rejected,
            Outcome::Applied => &mut self.applied,
            Outcome::Unchanged => &mut self.unchanged,
            Outcome::NotFound => &mut self.not_found,
            Outcome::Failed => &mut self.failed,
            Outcome::Cancelled => &mut self.cancelled,
            Outcome::Planned => &mut self.planned,
            // Still pending in the store (`Outcome::AwaitingUser`).
            Outcome::AwaitingUser | Outcome::Scheduled => &mut self.pending,
        };
        *slot += n;
        self.total += n;
    }

    /// The terminal status these counts imply once nothing is pending.
    pub fn final_status(&self) -> JobStatus {
        if self.rejected + self.not_found + self.failed > 0 {
            JobStatus::CompletedWithErrors
        } else {
            JobStatus::Succeeded
        }
    }
}

/// What the planner expects a job to cost (`estimate` in the API), fixed when it is planned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Estimate {
    /// How the users are read.
    pub strategy: ReadMethod,
    /// Read calls in total: planning (page size, probe, scan) plus the chunks' lookups.
    pub reads: i64,
    /// At most one write per user (0 for a dry run).
    pub writes_max: i64,
    /// Seconds the remaining calls take at the configured rate.
    pub eta_secs: i64,
    /// Lookups the chunks will make.
    pub lookups: i64,
    /// Users in the target's directory, when probed.
    pub org_users: Option<u64>,
    pub page_size: Option<u64>,
    pub scan_pages: Option<u64>,
    pub requests_per_minute: u32,
    /// The policy's privileged roles this job grants, when it grants any.
    #[serde(default)]
    pub privileged: Option<PrivilegedGrants>,
    /// The API that writes this job's roles, chosen by comparing the two counts below.
    #[serde(default)]
    pub write_api: WriteApi,
    /// Calls (reads + writes at most) if the job is written through SCIM.
    #[serde(default)]
    pub scim_path_calls: Option<i64>,
    /// Calls (reads + setup + bulk writes at most) if written through the Authorization API;
    /// null while `target.write_api = "scim"`.
    #[serde(default)]
    pub authorization_path_calls: Option<i64>,
    /// The job's leavers (users with `action` `revoke`, from the batch or, for a roster
    /// `full`, managed users it did not name), when it has any.
    #[serde(default)]
    pub leavers: Option<Leavers>,
}

/// The leavers of a job: how many, and the first of them by `external_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Leavers {
    /// Users the job takes every managed role from.
    pub users: u64,
    /// The first `Leavers::SAMPLE` of them, by `external_id`.
    pub sample: Vec<String>,
}

impl Leavers {
    /// External ids kept as a sample.
    pub const SAMPLE: usize = 20;
}

/// Privileged roles (the policy's `privileged_roles`, with the roles that inherit them) that a
/// job's rows ask for. A job that grants them waits for approval unless the key that submitted
/// it carries the `roles:privileged` scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrivilegedGrants {
    /// The privileged roles asked for (inherited ones included), sorted.
    pub roles: Vec<String>,
    /// Users who would be given one of them.
    pub users: u64,
    /// Whether the submitting key may grant them without approval (`roles:privileged`).
    pub allowed_by_key: bool,
}

/// Why a job waits in `awaiting_approval`, or why it did not have to (`approval`): the
/// removal bounds of a `replace` job, and privileged grants in any mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    pub required: bool,
    /// What requires it (empty when nothing does).
    #[serde(default)]
    pub reasons: Vec<ApprovalReason>,
    /// Users who would lose roles, when read ahead (null when the job is too small to cross
    /// the bound and was not read ahead, or takes no role away: neither a `replace` job nor a
    /// revert, and no leavers).
    pub users_losing_roles: Option<u64>,
    /// The removal bound in users: the smaller of the two below, for this org (null unless
    /// the job is a `replace` job, a revert, or has leavers).
    pub threshold_users: Option<u64>,
    pub org_users: Option<u64>,
    pub max_removed_users: Option<u64>,
    pub max_removal_fraction: Option<f64>,
    /// The privileged roles the job grants, if any.
    #[serde(default)]
    pub privileged: Option<PrivilegedGrants>,
}
