//! The policy against the org, before any write: the roles of the policy the target org lacks,
//! from its role catalog (`ScimClient::role_catalog`, read at most once per 10 minutes per
//! process). Planning rejects the rows that need one (`unknown_target_role`), so a typo or a
//! role renamed in Genesys costs no call per user. When the catalog cannot be read (a 403, the
//! target down, an `rfc7644` target without one), nothing is rejected: the job goes on as if
//! the check did not exist, and a role the org lacks fails user by user, as before.

use super::Deps;
use crate::configuration::TargetProfile;
use crate::policy::{Policy, RoleSet};
use crate::scim::CallTally;
use std::time::Duration;
use tokio::time::Instant;

/// After a failed catalog read, how long planning goes on without the check before reading
/// again: a target that cannot answer is not asked again for every job.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The longest planning waits for the catalog: a read retried against a slow or failing
/// target (`target.max_retry_secs`) must not hold every job's planning.
const READ_BOUND: Duration = Duration::from_secs(15);

/// When the last catalog read failed, if it did.
#[derive(Default)]
pub(crate) struct OrgRolesCheck {
    failed_at: std::sync::Mutex<Option<Instant>>,
}

impl OrgRolesCheck {
    fn recently_failed(&self) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
    }

    fn set_failed(&self, failed: bool) {
        *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = failed.then(Instant::now);
    }
}

/// The policy's roles the org lacks (empty when it has them all); None when the catalog could
/// not be read, and then no row is rejected for it. The catalog read is the process's, not a
/// job's: its calls are not counted in any job's `scim` counts.
pub(crate) async fn missing_from_org(deps: &Deps, policy: &Policy) -> Option<RoleSet> {
    if deps.settings.target.profile == TargetProfile::Rfc7644 || deps.org_roles.recently_failed() {
        return None;
    }
    let tally = CallTally::default();
    let read = tokio::time::timeout(READ_BOUND, deps.scim.role_catalog(&tally)).await;
    let why = match read {
        Ok(Ok(catalog)) => {
            deps.org_roles.set_failed(false);
            let diff = crate::policy::org::diff(policy, &catalog.names);
            if !diff.missing_from_org.is_empty() {
                tracing::warn!(
                    missing = ?diff.missing_from_org,
                    "policy roles the target org lacks: rows needing them are rejected (unknown_target_role)"
                );
            }
            return Some(diff.missing_from_org.into_iter().collect());
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", READ_BOUND.as_secs()),
    };
    deps.org_roles.set_failed(true);
    tracing::warn!(
        error = %why,
        "cannot read the target's role catalog; rows are not checked against the org's roles \
         (a role the org lacks fails user by user); reading it again in a minute"
    );
    None
}
