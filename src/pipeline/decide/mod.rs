//! What to do with one user, given the roles the target holds for them now. A pure function of
//! its inputs: no call, no store, no clock, so that every branch is tested here and the sync
//! worker only acts on the answer (`sync::sync_user`).
//!
//! The worker decides again after each version conflict, on the roles it re-read: the decision
//! is always about what the target holds at that moment, so a concurrent change by someone else
//! is never overwritten blindly.

use crate::domain::{Mode, ReasonCode};
use crate::policy::{Policy, RoleChange, RoleSet};

/// What an earlier attempt of the user's chunk recorded before writing the user (its "intent"):
/// the roles it was adding and removing. That attempt died before recording the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Intent<'a> {
    pub(crate) added: &'a [String],
    pub(crate) removed: &'a [String],
}

impl Intent<'_> {
    /// Whether any part of the earlier write is in place: a role it added that the user holds,
    /// or one it removed that the user lacks. A write may land in part (on the Authorization
    /// path a user's change is one call per role, and a stop can come between two), and a
    /// part that landed is this job's write as much as a whole one. (A hand change making the
    /// same change cannot be told apart from it.)
    fn landed_on(&self, current: &RoleSet) -> bool {
        self.added.iter().any(|r| current.contains(r))
            || self.removed.iter().any(|r| !current.contains(r))
    }

    /// The roles the user held before the earlier write: what it added taken away from what
    /// the user holds now, what it removed given back.
    fn before(&self, current: &RoleSet) -> RoleSet {
        let mut before: RoleSet = current
            .iter()
            .filter(|r| !self.added.contains(r))
            .cloned()
            .collect();
        before.extend(self.removed.iter().cloned());
        before
    }

    /// The earlier write, as applied to a user now holding `current`.
    fn change(&self, current: &RoleSet) -> RoleChange {
        RoleChange::new(self.before(current), current.clone())
    }
}

/// The decision for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write `after`. The change is never empty and `before` is what the target holds.
    Write(RoleChange),
    /// The user already holds the roles the job leads to, and no earlier attempt wrote them.
    Unchanged,
    /// A dry run: `after` is what a real run would write (never empty).
    Planned(RoleChange),
    /// The user already holds the roles the job leads to because an earlier attempt of this job
    /// wrote them: the write was this job's, reported with the diff that attempt recorded.
    /// `after` is what the target holds.
    AlreadyApplied(RoleChange),
    /// The roles the job leads to break a separation-of-duties rule: nothing is written.
    Reject { reason: ReasonCode, message: String },
    /// An earlier attempt of this job wrote the user (`change`, from its intent), and what the
    /// user holds now would be refused (`reason`): a hand change since then broke a
    /// separation-of-duties rule, or changed the user under a revert. The write stays
    /// recorded as `applied` (it happened), nothing more is written, and the conflict is
    /// raised on its own.
    AppliedWithConflict {
        change: RoleChange,
        reason: ReasonCode,
        message: String,
    },
}

/// Decides for a user holding `current` whom the job wants to hold `desired` (already expanded).
///
/// In order: the final set (`Policy::final_roles`); a separation-of-duties rule broken by it
/// rejects the user, dry run or not; an empty diff is `Unchanged`; otherwise `Planned` in a dry
/// run, else `Write`. Then what an earlier attempt recorded is taken into account
/// (`with_prior`): a write it made is never reported as not made.
pub(crate) fn decide(
    policy: &Policy,
    mode: Mode,
    current: &RoleSet,
    desired: &RoleSet,
    dry_run: bool,
    prior: Option<Intent<'_>>,
) -> Decision {
    let after = policy.final_roles(mode, current, desired);
    let fresh = if let Some(rule) = policy.sod_violation(&after) {
        Decision::Reject {
            reason: ReasonCode::SodConflict,
            message: rule.conflict_message(),
        }
    } else {
        let change = RoleChange::new(current.clone(), after);
        if change.is_empty() {
            Decision::Unchanged
        } else if dry_run {
            Decision::Planned(change)
        } else {
            Decision::Write(change)
        }
    };
    with_prior(fresh, current, prior)
}

/// The decision for a user an earlier attempt of the job may have written (`prior`: the intent
/// it recorded before its write), from the decision made on what the target holds now
/// (`fresh`). History is never rewritten:
/// - nothing left to write: the earlier write is reported, `AlreadyApplied` with its diff;
/// - a refusal of what the user holds now, when the earlier write landed: that write is still
///   reported (`AppliedWithConflict`), with the refusal as a conflict found after it;
/// - more to write, when the earlier write landed (a hand change since): one record covers
///   both writes, from the roles before the first to the roles after the second.
fn with_prior(fresh: Decision, current: &RoleSet, prior: Option<Intent<'_>>) -> Decision {
    let Some(intent) = prior else {
        return fresh;
    };
    match fresh {
        Decision::Unchanged => Decision::AlreadyApplied(intent.change(current)),
        Decision::Reject { reason, message } if intent.landed_on(current) => {
            Decision::AppliedWithConflict {
                change: intent.change(current),
                reason,
                message,
            }
        }
        Decision::Write(change) if intent.landed_on(current) => {
            let both = RoleChange::new(intent.before(current), change.after.clone());
            if both.is_empty() {
                Decision::Write(change)
            } else {
                Decision::Write(both)
            }
        }
        other => other,
    }
}

/// What a cancelled job's user came to, when a write of the job may have reached them
/// (`prior`: what it was to add and remove) and they hold `current` now: the part of that write
/// that landed, as a change from the roles before it to `current` (to be recorded `applied`),
/// or `None` when no part of it landed (`cancelled`: nothing was written). Nothing more is
/// written for a cancelled job, so what the job wanted beyond it does not matter here.
pub(crate) fn settled(current: &RoleSet, prior: Intent<'_>) -> Option<RoleChange> {
    prior
        .landed_on(current)
        .then(|| prior.change(current))
        .filter(|c| !c.is_empty())
}

/// What a revert knows of one user: the roles the reverted job found them with (`before`) and
/// left them with (`after`), as it recorded them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Undo<'a> {
    pub(crate) before: &'a RoleSet,
    pub(crate) after: &'a RoleSet,
}

/// Decides a revert for a user holding `current`.
///
/// The revert is the inverse delta of the reverted job: remove what it added, add back what it
/// removed. Applied to a user who still holds exactly what the job left, it gives exactly the
/// roles the job found. In order:
/// - a user who already holds what the revert leads to (reverted by hand, or by an earlier
///   attempt: `AlreadyApplied` with its intent) is not written;
/// - a user whose roles changed since the job (current ≠ `after`) is left alone, `rejected`
///   with `changed_since` and a message naming what changed, unless `force`: then the inverse
///   delta is applied on top of what they hold now;
/// - the result must not break a separation-of-duties rule (`sod_conflict`), as for any job;
/// - `Planned` in a dry run, else `Write`.
pub(crate) fn decide_revert(
    policy: &Policy,
    current: &RoleSet,
    undo: Undo<'_>,
    force: bool,
    dry_run: bool,
    prior: Option<Intent<'_>>,
) -> Decision {
    let added: RoleSet = undo.after.difference(undo.before).cloned().collect();
    let removed: RoleSet = undo.before.difference(undo.after).cloned().collect();
    let target: RoleSet = current
        .iter()
        .filter(|r| !added.contains(*r))
        .chain(removed.iter())
        .cloned()
        .collect();
    let change = RoleChange::new(current.clone(), target);
    let fresh = if change.is_empty() {
        Decision::Unchanged
    } else if !force && current != undo.after {
        Decision::Reject {
            reason: ReasonCode::ChangedSince,
            message: changed_since_message(undo.after, current),
        }
    } else if let Some(rule) = policy.sod_violation(&change.after) {
        Decision::Reject {
            reason: ReasonCode::SodConflict,
            message: rule.conflict_message(),
        }
    } else if dry_run {
        Decision::Planned(change)
    } else {
        Decision::Write(change)
    };
    with_prior(fresh, current, prior)
}

/// Names what changed between the roles a job left (`left`) and what the user holds now.
fn changed_since_message(left: &RoleSet, current: &RoleSet) -> String {
    let list = |roles: Vec<&String>| {
        if roles.is_empty() {
            "none".to_owned()
        } else {
            roles
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "the user's roles changed since the reverted job: added since: {}; removed since: {}; \
         left alone (force applies the inverse delta anyway)",
        list(current.difference(left).collect()),
        list(left.difference(current).collect()),
    )
}

#[cfg(test)]
mod tests;
