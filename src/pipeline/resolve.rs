//! Stage 2: each user's desired role set (the union of their rows, expanded with inherited
//! roles when the policy says so) and its effective permissions, memoised per distinct set, so
//! the sync workers and the audit events find them computed. One page of users at a time.

use super::validate::{Page, UserRows, Validated};
use super::{Deps, record_depth};
use crate::policy::Policy;
use crate::store::{JobRecord, RowResult};
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct ResolvedUser {
    pub rows: UserRows,
}

/// One page of a job's users with their desired roles.
pub struct Resolved {
    pub job: JobRecord,
    pub policy: Arc<Policy>,
    pub page: Page,
    pub first: bool,
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
                ResolvedUser { rows }
            })
            .collect();
        let msg = Resolved {
            job: v.job,
            policy: v.policy,
            page: v.page,
            first: v.first,
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
