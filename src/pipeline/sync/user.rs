//! One user of a chunk run: find them, decide (`decide`), and write, fenced by the chunk's
//! lease (`fence`).

use super::*;

/// Syncs one user of a run unless the run is stopped. Checked before the user's first call:
/// once the chunk is stopped no new user starts (calls of users already started are dropped by
/// the tally).
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_user(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    claim: &ChunkClaim,
    snapshot: Option<&Snapshot>,
    u: &UserRows<ItemRecord>,
    run: &ChunkRun,
    sent: &mut Option<RoleChange>,
) -> UserResult {
    if run.stopped().is_some() {
        return UserResult::Skipped;
    }
    if deps.circuit.state() != TargetState::Up {
        let reason = deps
            .circuit
            .reason()
            .unwrap_or(PausedReason::TargetUnavailable);
        run.stop(Stop::CircuitOpen(reason));
        return UserResult::Skipped;
    }
    // A user dated in the future (`effective_at`) is held, without a call: their rows stay
    // pending and the chunk comes back, to whichever replica claims it, at the latest of
    // their dates (a user's rows are applied together). Exactly once: the write is fenced by
    // the chunk's lease like any other.
    if job.kind == JobKind::Sync
        && let Some(at) = u.rows.iter().filter_map(|r| r.effective_at_ms).max()
        && at > crate::store::now_ms()
    {
        return UserResult::Scheduled {
            lines: u.lines().collect(),
            at_ms: at,
        };
    }
    sync_user(deps, policy, job, claim, snapshot, u, run, sent).await
}

/// What a job wants of one user, read once from the user's rows.
pub(super) enum Wanted {
    /// A sync or a reconcile: the user's desired set (expanded), reached in the job's mode;
    /// a leaver (`revoke`): no managed role, reached in `replace` (`UserRows::mode`).
    Desired(RoleSet, Mode),
    /// A revert: the roles the reverted job found the user with and left them with.
    Undo { before: RoleSet, after: RoleSet },
}

impl Wanted {
    pub(super) fn of(policy: &Policy, job: &JobRecord, u: &UserRows<ItemRecord>) -> Wanted {
        match job.kind {
            JobKind::Sync | JobKind::Reconcile => {
                Wanted::Desired(u.desired(policy), u.mode(job.mode))
            }
            JobKind::Revert => {
                let set = |v: Option<&Vec<String>>| -> RoleSet {
                    v.map(|v| v.iter().cloned().collect()).unwrap_or_default()
                };
                let first = u.rows.first();
                Wanted::Undo {
                    before: set(first.and_then(|r| r.desired_roles.as_ref())),
                    after: set(first.and_then(|r| r.expected_roles.as_ref())),
                }
            }
        }
    }

    /// The decision for a user holding `current`: the one pure function of the job's kind.
    pub(super) fn decide(
        &self,
        policy: &Policy,
        job: &JobRecord,
        current: &RoleSet,
        prior: Option<Intent<'_>>,
    ) -> Decision {
        match self {
            Wanted::Desired(desired, mode) => {
                decide(policy, *mode, current, desired, job.dry_run, prior)
            }
            Wanted::Undo { before, after } => decide_revert(
                policy,
                current,
                Undo { before, after },
                job.revert_force,
                job.dry_run,
                prior,
            ),
        }
    }
}

/// The intent an earlier run of the chunk recorded for the user before writing them. The rows
/// of a user are written together: one of them carries the intent of all.
pub(super) fn stored_intent(u: &UserRows<ItemRecord>) -> Option<Intent<'_>> {
    u.rows.iter().find(|r| r.intent).map(|r| Intent {
        added: r.roles_added.as_deref().unwrap_or_default(),
        removed: r.roles_removed.as_deref().unwrap_or_default(),
    })
}

/// The user's intent (roles added, removed) as the store holds it now, called once the user
/// was read from the target. A chunk claimed for the first time (fence 1) had no earlier
/// owner, so its rows as read at the claim are enough; otherwise they are read again, so an
/// intent an earlier owner recorded after this run read the rows is not missed (`fence`).
pub(super) async fn fresh_intent(
    deps: &Deps,
    claim: &ChunkClaim,
    u: &UserRows<ItemRecord>,
) -> crate::store::StoreResult<Option<(Vec<String>, Vec<String>)>> {
    if claim.fence <= 1 {
        return Ok(stored_intent(u).map(|i| (i.added.to_vec(), i.removed.to_vec())));
    }
    let lines: Vec<i64> = u.lines().collect();
    deps.store.intent_of(&claim.job_id, &lines).await
}

/// Syncs one user: find them, decide, act; on a version conflict, read again and decide again,
/// up to `sync.max_conflict_retries` times. Every write is fenced (`fence`): its intent is
/// recorded under the chunk's lease first, and nothing is sent when that is refused.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_user(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    claim: &ChunkClaim,
    snapshot: Option<&Snapshot>,
    u: &UserRows<ItemRecord>,
    run: &ChunkRun,
    sent: &mut Option<RoleChange>,
) -> UserResult {
    let tally = &run.tally;
    let report = Report {
        deps,
        policy,
        job,
        user: u,
    };
    let mut user = match report.find_one(snapshot, tally).await {
        Ok(user) => user,
        Err(r) => return r,
    };
    // The target answered: failures seen so far are no evidence of an outage.
    deps.circuit.call_succeeded();
    let lines: Vec<i64> = u.lines().collect();
    // The intents as they are now that the user was read (`fence`): an earlier owner's write
    // that reached the target before the read had its intent recorded before it.
    let prior_owned = match fresh_intent(deps, claim, u).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the user's write intents; the user is retried");
            return UserResult::Retry { lines };
        }
    };
    let prior = prior_owned
        .as_ref()
        .map(|(added, removed)| Intent { added, removed });
    let wanted = Wanted::of(policy, job, u);
    let max_rounds = deps.settings.sync.max_conflict_retries + 1;
    for _round in 0..max_rounds {
        let current = user.role_names();
        let change = match wanted.decide(policy, job, &current, prior) {
            Decision::Write(change) => change,
            Decision::Unchanged => return report.unwritten(&user.id, Outcome::Unchanged, None),
            Decision::Planned(change) => {
                return report.unwritten(&user.id, Outcome::Planned, Some(&change));
            }
            Decision::AlreadyApplied(change) => return report.applied(&user.id, &change),
            Decision::AppliedWithConflict {
                change,
                reason,
                message,
            } => return report.applied_with_conflict(&user.id, &change, reason, &message),
            Decision::Reject { reason, message } => return report.rejected(reason, &message),
        };
        if tally.is_stopped() {
            // Not even the intent: no write will be sent for this user in this run.
            return UserResult::Skipped;
        }
        // Never a blind write: without a version to put in `If-Match`, read the user again
        // (and decide again on what that read says); a target that gives none is refused.
        // (The Authorization path's calls take no `If-Match`: see `bulk`.)
        let version = match user.version() {
            _ if writes_in_bulk(job) => None,
            Some(v) => Some(v),
            None => match deps.scim.get_user(&user.id, tally).await {
                Ok(fresh) if fresh.version().is_some() => {
                    user = fresh;
                    continue;
                }
                Ok(_) => {
                    return report.failed(
                        Outcome::Failed,
                        ReasonCode::ScimRejected,
                        "the target gives no version for this user; rolesync never writes without If-Match",
                    );
                }
                Err(ScimError::NotFound) => return report.deleted(),
                Err(e) => return report.call_failed(e),
            },
        };
        // No write without its intent on record, under the chunk's lease: should this run's
        // commit be lost, the intent is what lets the re-run report the write as `applied`
        // rather than `unchanged`.
        match deps
            .store
            .mark_intent(
                claim,
                &deps.owner,
                fence::margin_ms(deps.lease_ms()),
                &lines,
                &change.added,
                &change.removed,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // The lease is gone, or too near its end to send under: stop the run now.
                run.stop(Stop::LeaseLost);
                return UserResult::Skipped;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the write intent; the user is retried");
                return UserResult::Retry { lines };
            }
        }
        let Some(version) = version else {
            // The Authorization path: the write goes with the chunk's other users
            // (`write_deferred`).
            return UserResult::Deferred {
                user_id: user.id.clone(),
                change,
            };
        };
        let roles: Vec<String> = change.after.iter().cloned().collect();
        // From here the write may reach the target, whatever the call answers (a timeout, a
        // retry dropped by a stop): a cancel then reads the user back rather than guess.
        *sent = Some(change.clone());
        let written = deps
            .scim
            .patch_roles(&user.id, &version, &roles, tally)
            .await;
        user = match written {
            Ok(_) => return report.applied(&user.id, &change),
            // Someone changed the user since we read it: read again and decide again. The
            // write was refused, so its intent is taken back first (back to the intent of an
            // earlier attempt, if there was one: that write may well have landed): left in
            // place, a re-run finding another writer's change would report it as this job's.
            Err(ScimError::Conflict) => {
                withdraw_intent(deps, claim, &lines, prior).await;
                match deps.scim.get_user(&user.id, tally).await {
                    Ok(fresh) => fresh,
                    Err(ScimError::NotFound) => return report.deleted(),
                    Err(e) => return report.call_failed(e),
                }
            }
            Err(ScimError::NotFound) => return report.deleted(),
            Err(e @ ScimError::Unavailable { .. }) => {
                let failure = report.call_failed(e);
                return read_back_or(&report, Some(&change), tally, failure).await;
            }
            Err(e) => return report.call_failed(e),
        };
    }
    report.failed(
        Outcome::Failed,
        ReasonCode::RetriesExhausted,
        &format!("the user kept changing: {max_rounds} version conflicts in a row"),
    )
}

/// Takes back the intent this run recorded for a write the target refused (a version
/// conflict: nothing of it landed), under the chunk's lease: back to `earlier`, the intent of
/// an earlier attempt read when this run began (whose write may have landed), or to none. Best effort: when it cannot (the
/// lease is gone, the store is cut), the intent stays, and a re-run may report another
/// writer's identical change as this job's (`docs/chaos.md`, "An intent without its write").
async fn withdraw_intent(
    deps: &Deps,
    claim: &ChunkClaim,
    lines: &[i64],
    earlier: Option<Intent<'_>>,
) {
    let restored = match earlier {
        // An earlier attempt's intent is still true: its write may have landed.
        Some(i) => {
            deps.store
                .mark_intent(claim, &deps.owner, 0, lines, i.added, i.removed)
                .await
        }
        None => deps.store.withdraw_intent(claim, &deps.owner, lines).await,
    };
    match restored {
        Ok(true) => {}
        Ok(false) => tracing::debug!("the intent of a refused write stays: the lease is gone"),
        Err(e) => tracing::warn!(error = %e, "cannot take back the intent of a refused write"),
    }
}
