//! Stage 2: each user's desired role set (the union of their rows, expanded with inherited
//! roles when the policy says so) and its effective permissions, memoised per distinct set.

use super::validate::{UserRows, Validated};
use super::{Deps, record_depth};
use crate::policy::Policy;
use crate::policy::RoleSet;
use crate::store::{JobRecord, RowResult};
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct ResolvedUser {
    pub rows: UserRows,
    /// The roles to push (expanded when `expand_inherited`).
    pub desired: RoleSet,
}

pub struct Resolved {
    pub job: JobRecord,
    pub policy: Arc<Policy>,
    pub rejected: Vec<RowResult>,
    pub rejected_rows: std::collections::HashMap<i64, crate::domain::Assignment>,
    pub users: Vec<ResolvedUser>,
}

pub async fn run(deps: Deps, mut rx: mpsc::Receiver<Validated>, tx: mpsc::Sender<Resolved>) {
    while let Some(v) = rx.recv().await {
        let users = v
            .users
            .into_iter()
            .map(|rows| {
                let desired = v.policy.expand(&rows.roles);
                // Warms the memo the sync stage and the audit events read from.
                let _ = v.policy.effective_permissions(&desired);
                ResolvedUser { rows, desired }
            })
            .collect();
        let msg = Resolved {
            job: v.job,
            policy: v.policy,
            rejected: v.rejected,
            rejected_rows: v.rejected_rows,
            users,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
        record_depth(&deps.metrics, "plan", &tx);
    }
}
