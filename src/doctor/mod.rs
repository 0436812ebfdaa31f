//! `rolesync doctor` and `GET /v1/target/check`: a preflight of the configured target before
//! the first job. A handful of read calls (`probe`, the only I/O here; at most
//! `probe::MAX_CALLS` whatever the org's size) are made once, then each check is a pure
//! function of what they returned (`checks`), with ✔ / ✘ / ? and the fix in one sentence.
//!
//! Nothing here writes to the target, so write permissions are always `?` (reported as such).
//! The calls bypass the pipeline's pacing: they are few, made on demand, and must not wait
//! behind a running job's queue.

mod checks;
mod probe;

pub use checks::{Expected, Observations, evaluate};

use crate::configuration::Settings;
use crate::domain::{CheckId, CheckStatus, WriteApi};
use crate::policy::Policy;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Check {
    pub id: CheckId,
    pub status: CheckStatus,
    /// What was found, in one sentence.
    #[schema(example = "token granted; lifetime 86400 s (expires_in)")]
    pub summary: String,
    /// What to change, in one sentence; empty when nothing is to be done.
    #[schema(example = "")]
    pub fix: String,
}

/// What `rolesync doctor --output json` prints and `GET /v1/target/check` answers: every check
/// in `CheckId` order, and the calls made to the target (the token request included).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Report {
    pub checks: Vec<Check>,
    #[schema(example = 7)]
    pub calls: u32,
}

/// The report's overall result, for the exit code of `rolesync doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No check failed, and the only unknowns are the ones reads can never tell
    /// (`write_permissions`).
    Pass,
    /// No check failed, but one that could have been made was not (e.g. a catalog not read).
    Unknown,
    /// At least one check failed.
    Fail,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self.checks.iter().any(|c| c.status == CheckStatus::Fail) {
            Verdict::Fail
        } else if self
            .checks
            .iter()
            .any(|c| c.status == CheckStatus::Unknown && c.id != CheckId::WritePermissions)
        {
            Verdict::Unknown
        } else {
            Verdict::Pass
        }
    }

    /// The report for people: one line per check (✔ ✘ ?), its fix under it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.status {
                CheckStatus::Pass => "✔",
                CheckStatus::Fail => "✘",
                CheckStatus::Unknown => "?",
            };
            out.push_str(&format!("{mark} {:<18} {}\n", c.id.as_str(), c.summary));
            if !c.fix.is_empty() {
                out.push_str(&format!("  {:<18} fix: {}\n", "", c.fix));
            }
        }
        let plural = if self.calls == 1 { "" } else { "s" };
        out.push_str(&format!("{} call{plural} to the target\n", self.calls));
        out
    }
}

/// Probes the target `settings` names and checks it against `policy`.
pub async fn run(settings: &Settings, policy: &Policy) -> Report {
    let observations = probe::observe(settings).await;
    let expected = Expected {
        policy_roles: policy.roles().iter().map(|r| r.name.clone()).collect(),
        protected_roles: policy.protected_roles().iter().cloned().collect(),
        requests_per_minute: settings.target.requests_per_minute,
        authorization_path: settings.target.write_api == WriteApi::Authorization,
    };
    Report {
        calls: observations.calls,
        checks: evaluate(&observations, &expected),
    }
}
