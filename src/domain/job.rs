use serde::{Deserialize, Serialize};

/// Lifecycle of a job (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    /// The target is unreachable; the job resumes by itself.
    Paused,
    AwaitingApproval,
    Succeeded,
    CompletedWithErrors,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::AwaitingApproval,
        JobStatus::Succeeded,
        JobStatus::CompletedWithErrors,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::AwaitingApproval => "awaiting_approval",
            JobStatus::Succeeded => "succeeded",
            JobStatus::CompletedWithErrors => "completed_with_errors",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

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

/// Outcome of one submitted row (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    Rejected,
    Applied,
    Unchanged,
    NotFound,
    Failed,
    Cancelled,
    Planned,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Pending,
        Outcome::Rejected,
        Outcome::Applied,
        Outcome::Unchanged,
        Outcome::NotFound,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Planned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Rejected => "rejected",
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::NotFound => "not_found",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Planned => "planned",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Outcomes that count as success for the job's final status.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Unchanged | Outcome::Planned)
    }
}

/// Machine-readable reason for a row that did not succeed (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    UnknownLicenseTier,
    UnknownRole,
    RoleNotEntitled,
    SodConflict,
    ConflictingLicenseTier,
    InvalidExternalId,
    DuplicateRow,
    UserNotFound,
    AmbiguousUser,
    ScimRejected,
    RetriesExhausted,
    MissingField,
    JobFailed,
    Cancelled,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::UnknownLicenseTier => "unknown_license_tier",
            ReasonCode::UnknownRole => "unknown_role",
            ReasonCode::RoleNotEntitled => "role_not_entitled",
            ReasonCode::SodConflict => "sod_conflict",
            ReasonCode::ConflictingLicenseTier => "conflicting_license_tier",
            ReasonCode::InvalidExternalId => "invalid_external_id",
            ReasonCode::DuplicateRow => "duplicate_row",
            ReasonCode::UserNotFound => "user_not_found",
            ReasonCode::AmbiguousUser => "ambiguous_user",
            ReasonCode::ScimRejected => "scim_rejected",
            ReasonCode::RetriesExhausted => "retries_exhausted",
            ReasonCode::MissingField => "missing_field",
            ReasonCode::JobFailed => "job_failed",
            ReasonCode::Cancelled => "cancelled",
        }
    }
}

/// Per-outcome row counts of a job (SPEC §3 `counts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
