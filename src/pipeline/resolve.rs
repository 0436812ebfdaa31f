//! Stage 2: each user's desired role set (the union of their rows, expanded with inherited
//! roles when the policy says so) and its effective permissions, memoised per distinct set, so
//! the sync workers and the audit events find them computed. One page of users at a time; the
//! page itself is passed on unchanged.

use super::validate::Validated;
use super::{Deps, record_depth};
use tokio::sync::mpsc;

pub async fn run(deps: Deps, mut rx: mpsc::Receiver<Validated>, tx: mpsc::Sender<Validated>) {
    while let Some(v) = rx.recv().await {
        for user in &v.users {
            let desired = v.policy.expand(&user.roles);
            // Warms the memo the sync stage and the audit events read from.
            let _ = v.policy.effective_permissions(&desired);
        }
        if tx.send(v).await.is_err() {
            return;
        }
        record_depth(&deps.metrics, "plan", &tx);
    }
}
