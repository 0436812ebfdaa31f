//! The `roles changed` audit log line: one structured line per role change **recorded** in the
//! store, written once the chunk that records it is committed (`pipeline::results`), never
//! before, and never again by a re-run (a re-run that finds an earlier attempt's write records
//! it, and so logs it, once, in its own commit). A write whose outcome could not be committed
//! (the chunk's lease was lost, the commit failed, the run stopped after sending it) gets a line
//! of its own, `role write not recorded by this run`, at `warn`: the chunk's next owner records
//! it.
//!
//! The other findings a chunk's run makes about a user are logged the same way, from what is
//! committed: `drift detected` (a reconcile found the user's roles not what their desired state
//! implies) and `a write this job made earlier is now in conflict` (`AuditLine`). Neither is
//! logged for a run that could not commit: its next owner finds the same and logs it then.
//!
//! All these lines go to the tracing target `audit`. Role lists are JSON arrays as text
//! (`["Agent","Employee"]`), since a log field holds one value. `request.id` is the
//! `x-request-id` of the POST that submitted the job, `actor` who submitted it
//! (`api_key:<name>`, `token:<name> (<issuer>#<subject>)`, `system:reconcile.schedule`). Nothing else is logged: no tokens,
//! secrets or bodies.

use crate::domain::{Mode, Principal, ReasonCode};
use crate::policy::{RoleChange, RoleSet};

/// An audit line of a chunk's run, held until the chunk is committed (`pipeline::results`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuditLine {
    /// A role change recorded `applied`.
    RolesChanged(RoleChangeLine),
    /// A reconcile found the user drifted.
    Drift(DriftLine),
    /// A write an earlier attempt made is in conflict with what the user holds now.
    Conflict(ConflictLine),
}

impl AuditLine {
    /// The chunk is committed: the line, once.
    pub(crate) fn committed(&self) {
        match self {
            AuditLine::RolesChanged(l) => l.committed(),
            AuditLine::Drift(l) => l.committed(),
            AuditLine::Conflict(l) => l.committed(),
        }
    }

    /// The chunk could not be committed: a write sent says so; a finding is left to the
    /// chunk's next owner, which makes it again.
    pub(crate) fn not_recorded(&self, why: &str) {
        if let AuditLine::RolesChanged(l) = self {
            l.not_recorded(why);
        }
    }

    /// The role change of a write this line records, if it is one.
    pub(crate) fn into_role_change(self) -> Option<RoleChangeLine> {
        match self {
            AuditLine::RolesChanged(l) => Some(l),
            AuditLine::Drift(_) | AuditLine::Conflict(_) => None,
        }
    }
}

/// `drift detected`, of a reconcile's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DriftLine {
    job_id: String,
    external_id: String,
    user_id: String,
    current: String,
    desired: String,
    missing: String,
    extra: String,
    mode: Mode,
    /// The reconcile writes the fix (not a dry run).
    fixed: bool,
}

impl DriftLine {
    pub(crate) fn new(
        job_id: &str,
        mode: Mode,
        external_id: &str,
        user_id: &str,
        desired: &RoleSet,
        fix: &RoleChange,
        fixed: bool,
    ) -> DriftLine {
        DriftLine {
            job_id: job_id.to_owned(),
            external_id: external_id.to_owned(),
            user_id: user_id.to_owned(),
            current: json_text(&fix.before),
            desired: json_text(desired),
            missing: json_text(&fix.added),
            extra: json_text(&fix.removed),
            mode,
            fixed,
        }
    }

    fn committed(&self) {
        tracing::info!(
            target: "audit",
            {
                job.id = %self.job_id,
                user.external_id = %self.external_id,
                user.id = %self.user_id,
                roles.current = %self.current,
                roles.desired = %self.desired,
                roles.missing = %self.missing,
                roles.extra = %self.extra,
                job.mode = self.mode.as_str(),
                fixed = self.fixed,
            },
            "drift detected"
        );
    }
}

/// `a write this job made earlier is now in conflict`, at `warn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConflictLine {
    job_id: String,
    external_id: String,
    user_id: String,
    current: String,
    reason: ReasonCode,
    message: String,
}

impl ConflictLine {
    pub(crate) fn new(
        job_id: &str,
        external_id: &str,
        user_id: &str,
        current: &RoleSet,
        reason: ReasonCode,
        message: &str,
    ) -> ConflictLine {
        ConflictLine {
            job_id: job_id.to_owned(),
            external_id: external_id.to_owned(),
            user_id: user_id.to_owned(),
            current: json_text(current),
            reason,
            message: message.to_owned(),
        }
    }

    fn committed(&self) {
        tracing::warn!(
            target: "audit",
            {
                job.id = %self.job_id,
                user.external_id = %self.external_id,
                user.id = %self.user_id,
                roles.current = %self.current,
                reason = self.reason.as_str(),
            },
            "a write this job made earlier is now in conflict: {}",
            self.message
        );
    }
}

/// A role change written to the target for a job, as its audit line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleChangeLine {
    pub(crate) job_id: String,
    pub(crate) request_id: String,
    pub(crate) external_id: String,
    /// The target's id of the user (empty when the write's answer never came).
    pub(crate) user_id: String,
    pub(crate) before: String,
    pub(crate) after: String,
    pub(crate) added: String,
    pub(crate) removed: String,
    pub(crate) mode: Mode,
    /// Who asked for the change: the job's submitter (`Principal::label`), empty if unknown.
    pub(crate) actor: String,
}

impl RoleChangeLine {
    pub(crate) fn new(
        job_id: &str,
        request_id: Option<&str>,
        mode: Mode,
        external_id: &str,
        user_id: &str,
        change: &RoleChange,
    ) -> RoleChangeLine {
        RoleChangeLine {
            job_id: job_id.to_owned(),
            request_id: request_id.unwrap_or("").to_owned(),
            external_id: external_id.to_owned(),
            user_id: user_id.to_owned(),
            before: json_text(&change.before),
            after: json_text(&change.after),
            added: json_text(&change.added),
            removed: json_text(&change.removed),
            mode,
            actor: String::new(),
        }
    }

    /// The line of a change asked for by `actor` (the job's `submitted_by`).
    pub(crate) fn by(mut self, actor: Option<&Principal>) -> RoleChangeLine {
        self.actor = actor.map(Principal::label).unwrap_or_default();
        self
    }

    /// The change is committed: `roles changed`, at `info`.
    fn committed(&self) {
        tracing::info!(
            target: "audit",
            {
                job.id = %self.job_id,
                request.id = %self.request_id,
                user.external_id = %self.external_id,
                user.id = %self.user_id,
                roles.before = %self.before,
                roles.after = %self.after,
                roles.added = %self.added,
                roles.removed = %self.removed,
                job.mode = self.mode.as_str(),
                actor = %self.actor,
            },
            "roles changed"
        );
    }

    /// The write was sent (and may have landed) but this run could not record it: `why`.
    pub(crate) fn not_recorded(&self, why: &str) {
        tracing::warn!(
            target: "audit",
            {
                job.id = %self.job_id,
                request.id = %self.request_id,
                user.external_id = %self.external_id,
                user.id = %self.user_id,
                roles.before = %self.before,
                roles.after = %self.after,
                roles.added = %self.added,
                roles.removed = %self.removed,
                job.mode = self.mode.as_str(),
                actor = %self.actor,
                reason = %why,
            },
            "role write not recorded by this run; the chunk's next owner records it"
        );
    }
}

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
