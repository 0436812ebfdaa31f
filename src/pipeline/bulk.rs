//! The Authorization write path (`target.write_api = "authorization"`, docs/bulk-grants.md):
//! the role changes of a chunk's users, already decided one by one on what the reads said
//! (`sync`), grouped by role and sent as one call per role per `target.bulk_max_subjects`
//! users: `PUT …/roles/{id}/users/remove` for the roles taken away, then
//! `POST …/roles/{id}?subjectType=PC_USER` for the roles granted, in the home division.
//!
//! Removals go first: a user being swapped from one role to another briefly holds neither
//! rather than both, so no separation-of-duties pair is ever held, even for a moment.
//!
//! **Bisection.** The target takes or refuses a batch whole and does not say which id it
//! refused (a user deleted since the read, say). A batch refused with a 400 is split in halves
//! and each half sent again, down to single users: one bad id among n costs 2·⌈log2 n⌉ extra
//! calls, and every other user of the batch is still written. The user a single-id call
//! refuses fails alone. Any other failure (403, outage, 429 beyond the budget) is the same for
//! every id and is not bisected.
//!
//! **No If-Match.** These endpoints take no precondition. They are safe without one because
//! they add or take away one role, never replace the whole set: a change someone makes to a
//! user's other roles between the read and the write is kept. What is recorded as `roles_after`
//! is the set computed from the read; it is what the target holds unless someone changed the
//! same user's roles between the read and the write (the SCIM path would have re-read on a
//! 409; this one cannot tell). docs/bulk-grants.md says what this means for concurrent writers.

use crate::policy::RoleChange;
use crate::scim::{AuthzCatalog, CallTally, ScimClient, ScimError};
use std::collections::BTreeMap;

/// What one bulk call does to its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    /// `PUT …/users/remove`. Ordered first (see the module's comment).
    Remove,
    /// `POST …/roles/{id}`.
    Grant,
}

/// One bulk call: a role, what to do with it, and the users (indices into the chunk's
/// pending writes), at most `bulk_max_subjects` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) op: Op,
    pub(crate) role: String,
    pub(crate) users: Vec<usize>,
}

/// Groups per-user changes by (op, role) and cuts each group in batches of at most `max`
/// users. A pure function: removals first, then grants, each by role name; users in order.
pub(crate) fn batches(changes: &[&RoleChange], max: usize) -> Vec<Batch> {
    let max = max.max(1);
    let mut groups: BTreeMap<(Op, &str), Vec<usize>> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        for r in &c.removed {
            groups.entry((Op::Remove, r)).or_default().push(i);
        }
        for r in &c.added {
            groups.entry((Op::Grant, r)).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for ((op, role), users) in groups {
        for part in users.chunks(max) {
            out.push(Batch {
                op,
                role: role.to_owned(),
                users: part.to_vec(),
            });
        }
    }
    out
}

/// The bulk calls `changes` cost, bisection aside: Σ over (op, role) of ⌈users / max⌉.
pub(crate) fn calls_for(counts: impl IntoIterator<Item = u64>, max: usize) -> i64 {
    let max = max.max(1) as u64;
    counts.into_iter().map(|n| n.div_ceil(max) as i64).sum()
}

/// A 400 on a batch of several users: one of them (or more) is at fault; split and resend.
fn bisectable(e: &ScimError, users: usize) -> bool {
    users > 1 && matches!(e, ScimError::Rejected { status: 400, .. })
}

/// Sends the batches and returns, per user of `ids`, the first error any of its calls met
/// (None: every call of the user succeeded). Refused batches are bisected (see the module).
pub(crate) async fn write(
    client: &ScimClient,
    catalog: &AuthzCatalog,
    tally: &CallTally,
    ids: &[&str],
    batches: Vec<Batch>,
) -> Vec<Option<ScimError>> {
    let mut failed: Vec<Option<ScimError>> = vec![None; ids.len()];
    for batch in batches {
        let Some(role_id) = catalog.role_ids.get(&batch.role) else {
            let e = ScimError::Rejected {
                status: 404,
                detail: format!("the role '{}' is not in the target's catalog", batch.role),
            };
            for &u in &batch.users {
                failed[u].get_or_insert_with(|| e.clone());
            }
            continue;
        };
        // Depth-first, so a bad id is isolated before the rest of the batch is resent.
        let mut stack = vec![batch.users];
        while let Some(users) = stack.pop() {
            let subjects: Vec<&str> = users.iter().filter_map(|&u| ids.get(u).copied()).collect();
            let sent = match batch.op {
                Op::Grant => {
                    client
                        .grant_role(role_id, &catalog.home_division, &subjects, tally)
                        .await
                }
                Op::Remove => client.remove_role(role_id, &subjects, tally).await,
            };
            match sent {
                Ok(()) => {}
                Err(e) if bisectable(&e, users.len()) => {
                    let (a, b) = users.split_at(users.len() / 2);
                    stack.push(b.to_vec());
                    stack.push(a.to_vec());
                }
                Err(e) => {
                    for &u in &users {
                        failed[u].get_or_insert_with(|| e.clone());
                    }
                }
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RoleSet;

    fn change(before: &[&str], after: &[&str]) -> RoleChange {
        let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<RoleSet>();
        RoleChange::new(set(before), set(after))
    }

    #[test]
    fn changes_are_grouped_by_role_removals_first_and_cut_at_the_cap() {
        let swap = change(&["Employee", "Agent"], &["Employee", "Supervisor"]);
        let grant = change(&["Employee"], &["Employee", "Supervisor"]);
        let changes: Vec<&RoleChange> = vec![&swap, &grant, &swap, &grant, &swap];
        let b = batches(&changes, 2);
        let got: Vec<(Op, &str, Vec<usize>)> = b
            .iter()
            .map(|b| (b.op, b.role.as_str(), b.users.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Op::Remove, "Agent", vec![0, 2]),
                (Op::Remove, "Agent", vec![4]),
                (Op::Grant, "Supervisor", vec![0, 1]),
                (Op::Grant, "Supervisor", vec![2, 3]),
                (Op::Grant, "Supervisor", vec![4]),
            ]
        );
        assert_eq!(calls_for([3, 5], 2), 5);
        assert!(batches(&[], 100).is_empty());
    }

    #[test]
    fn only_a_400_on_several_users_is_bisected() {
        let bad = ScimError::Rejected {
            status: 400,
            detail: String::new(),
        };
        assert!(bisectable(&bad, 2));
        assert!(!bisectable(&bad, 1));
        let forbidden = ScimError::Forbidden {
            detail: String::new(),
        };
        assert!(!bisectable(&forbidden, 10));
        let role_gone = ScimError::NotFound;
        assert!(!bisectable(&role_gone, 10));
    }
}
