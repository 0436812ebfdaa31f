//! The `roles changed` audit log line: one structured line per role change **recorded** in the
//! store, written once the chunk that records it is committed (`pipeline::results`), never
//! before, and never again by a re-run (a re-run that finds an earlier attempt's write records
//! it, and so logs it, once, in its own commit). A write whose outcome could not be committed
//! (the chunk's lease was lost, the commit failed, the run stopped after sending it) gets a line
//! of its own, `role write not recorded by this run`, at `warn`: the chunk's next owner records
//! it.
//!
//! Both lines go to the tracing target `audit`. Role lists are JSON arrays as text
//! (`["Agent","Employee"]`), since a log field holds one value. `request.id` is the
//! `x-request-id` of the POST that submitted the job, `actor` who submitted it
//! (`api_key:<name>`, `token:<name> (<issuer>#<subject>)`, `system:reconcile.schedule`). Nothing else is logged: no tokens,
//! secrets or bodies.

use crate::domain::{Mode, Principal};
use crate::policy::RoleChange;

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
    pub(crate) fn committed(&self) {
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
