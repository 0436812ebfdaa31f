//! Stage 4: SCIM workers. `claim` leases chunks from the store; each `worker` reads its users'
//! current roles, skips those already right, and PATCHes the rest with `If-Match`.
//!
//! Calls per user: one lookup (`externalId eq`), or none when the job scanned the directory and
//! this process holds the snapshot (`reads`); plus one PATCH if the roles differ, plus one
//! re-read and PATCH per ETag conflict. The final role set is computed against what the target
//! holds at that moment, so a concurrent change by someone else is never overwritten blindly.
//!
//! A chunk stops early, and is released uncommitted, on a target-wide failure or when most of
//! the job's latest users were refused by the target (`stops`).

use super::circuit::TargetState;
use super::reads::{Snapshot, find_user};
use super::stops::{ChunkRun, Stop, is_per_user_target_error};
use super::{Deps, record_depth};
use crate::audit::events::{
    ROLE_SYNC_COMPLETED, ROLE_SYNC_FAILED, ROLE_SYNC_REJECTED, rejected_data,
};
use crate::domain::{Mode, Outcome, ReasonCode};
use crate::policy::{Policy, RoleSet};
use crate::scim::{CallTally, ScimError, ScimUser};
use crate::store::{
    ChunkClaim, ChunkDone, ItemRecord, JobDeltas, JobRecord, OutboxEvent, RowResult,
};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// What a worker hands to the results stage.
pub enum ChunkOutcome {
    /// Every row of the chunk has an outcome.
    Done(ChunkClaim, ChunkDone),
    /// The chunk stopped early (`stops`): give it back, keep the calls spent.
    Release(ChunkClaim, JobDeltas, Stop),
}

/// Source of the sync stages: leases ready chunks while the circuit is closed.
pub async fn claim(deps: Deps, tx: mpsc::Sender<ChunkClaim>, stop: CancellationToken) {
    loop {
        if deps.circuit.state() != TargetState::Up {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = deps.circuit.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        // Wait for a free worker before leasing, so a lease is never held by a queue.
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = tx.reserve() => match p { Ok(p) => p, Err(_) => return },
        };
        match deps.store.claim_chunk(&deps.owner, deps.lease_ms()).await {
            Ok(Some(c)) => {
                permit.send(c);
                record_depth(&deps.metrics, "sync", &tx);
            }
            Ok(None) => {
                drop(permit);
                finish_orphans(&deps).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = deps.wake_claimer.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "cannot claim a chunk");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Finishes jobs whose last chunk was committed by a process that died before finishing them.
async fn finish_orphans(deps: &Deps) {
    match deps.store.jobs_to_finish().await {
        Ok(ids) => {
            for id in ids {
                super::plan::finish_if_done(deps, &id).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for jobs to finish"),
    }
}

pub async fn worker(
    deps: Deps,
    rx: Arc<Mutex<mpsc::Receiver<ChunkClaim>>>,
    tx: mpsc::Sender<ChunkOutcome>,
    stop: CancellationToken,
) {
    loop {
        let next = { rx.lock().await.recv().await };
        let Some(claim) = next else { return };
        let outcome = tokio::select! {
            // Hard stop: the lease is released and the chunk re-run elsewhere; writes already
            // made are found already right (read-diff-write), so nothing is applied twice.
            _ = stop.cancelled() => return,
            o = sync_chunk(&deps, claim) => o,
        };
        if let Some(o) = outcome
            && tx.send(o).await.is_err()
        {
            return;
        }
    }
}

/// One user of a chunk, with everything needed to sync it.
pub(super) struct UserWork {
    pub(super) external_id: String,
    rows: Vec<ItemRecord>,
    pub(super) desired: RoleSet,
}

enum UserResult {
    Rows {
        results: Vec<RowResult>,
        events: Vec<OutboxEvent>,
        changed: Option<bool>,
        /// The user failed on a per-user target error (counts towards `error_ratio`).
        target_error: bool,
    },
    TargetWide(ScimError),
    /// Not synced: the chunk was stopped before or during this user (no write was sent).
    Skipped,
}

async fn sync_chunk(deps: &Deps, claim: ChunkClaim) -> Option<ChunkOutcome> {
    let (job, items) = match tokio::try_join!(
        deps.store.get_job(&claim.job_id),
        deps.store.chunk_items(&claim.job_id, claim.chunk_no)
    ) {
        Ok((Some(job), items)) => (job, items),
        Ok((None, _)) => return None,
        Err(e) => {
            tracing::warn!(job.id = %claim.job_id, error = %e, "cannot read a chunk; its lease will expire");
            return None;
        }
    };
    let policy = deps.policy_for(&job.id);
    let users = group_users(&policy, items);
    let run = Arc::new(ChunkRun::default());
    deps.chunk_runs.register(&job.id, &run);
    let mut judge = deps.error_ratios.judge(&job.id, &deps.settings.sync);
    let concurrency = deps.settings.target.max_concurrency;
    let snapshot = deps.snapshot_for(&job.id);
    let mut done = ChunkDone::default();
    {
        let mut outcomes = futures::stream::iter(users)
            .map(|u| {
                let (run, policy, job, snapshot) = (&run, &policy, &job, snapshot.as_deref());
                async move {
                    // Checked before the user's first call: once the chunk is stopped no new
                    // user starts (calls of users already started are dropped by the tally).
                    if run.stopped().is_some() {
                        return UserResult::Skipped;
                    }
                    if deps.circuit.state() != TargetState::Up {
                        let reason = deps.circuit.reason().unwrap_or("target_unavailable");
                        run.stop(Stop::CircuitOpen(reason));
                        return UserResult::Skipped;
                    }
                    sync_user(deps, policy, job, snapshot, u, &run.tally).await
                }
            })
            .buffer_unordered(concurrency);
        while let Some(o) = outcomes.next().await {
            match o {
                UserResult::Rows {
                    results,
                    events,
                    changed,
                    target_error,
                } => {
                    match changed {
                        Some(true) => done.deltas.users_changed += 1,
                        Some(false) => done.deltas.users_unchanged += 1,
                        None => {}
                    }
                    done.results.extend(results);
                    done.events.extend(events);
                    judge.record(target_error);
                    if let Some((failed, sample)) = judge.tripped() {
                        let why = Stop::ErrorRatio { failed, sample };
                        run.stop(why.clone());
                        deps.chunk_runs.stop_job(&job.id, &why);
                    }
                }
                UserResult::TargetWide(e) => {
                    // Every other user of the job would fail the same way, one refused call
                    // each: stop this chunk and the job's other chunks in this process.
                    let why = Stop::Target(e);
                    run.stop(why.clone());
                    deps.chunk_runs.stop_job(&job.id, &why);
                }
                UserResult::Skipped => {}
            }
        }
    }
    let (requests, retries, rate_limited) = run.tally.snapshot();
    done.deltas.scim_requests = requests;
    done.deltas.scim_retries = retries;
    done.deltas.scim_rate_limited = rate_limited;
    match run.stopped() {
        // Outcomes reached before the stop are discarded with the chunk: the re-run reads
        // them back as already right, at the cost of one read each.
        Some(why) => Some(ChunkOutcome::Release(claim, done.deltas, why.clone())),
        None => {
            deps.error_ratios.commit(
                &job.id,
                judge.outcomes(),
                deps.settings.sync.error_ratio_window,
            );
            Some(ChunkOutcome::Done(claim, done))
        }
    }
}

/// The rows of a chunk (ordered by user) as users with their desired roles.
pub(super) fn group_users(policy: &Policy, items: Vec<ItemRecord>) -> Vec<UserWork> {
    let mut users: Vec<UserWork> = Vec::new();
    for item in items {
        match users.last_mut() {
            Some(u) if u.external_id == item.external_id => {
                u.desired.insert(item.role_template.clone());
                u.rows.push(item);
            }
            _ => {
                let mut desired = RoleSet::new();
                desired.insert(item.role_template.clone());
                users.push(UserWork {
                    external_id: item.external_id.clone(),
                    rows: vec![item],
                    desired,
                });
            }
        }
    }
    for u in &mut users {
        u.desired = policy.expand(&u.desired);
    }
    users
}

/// The role set a user should end with (SPEC §2).
///
/// - `merge`: current ∪ desired.
/// - `replace`: desired ∪ every current role the policy does not manage (hand-granted ones)
///   ∪ protected roles the user holds. `Employee` and unmanaged roles are never removed.
pub fn final_roles(policy: &Policy, mode: Mode, current: &RoleSet, desired: &RoleSet) -> RoleSet {
    match mode {
        Mode::Merge => current.union(desired).cloned().collect(),
        Mode::Replace => {
            let mut out = desired.clone();
            for r in current {
                if !policy.is_managed(r) || policy.protected_roles().contains(r) {
                    out.insert(r.clone());
                }
            }
            out
        }
    }
}

async fn sync_user(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    snapshot: Option<&Snapshot>,
    u: UserWork,
    tally: &CallTally,
) -> UserResult {
    let fail_rows = |outcome: Outcome, code: ReasonCode, message: String| -> UserResult {
        let results = u
            .rows
            .iter()
            .map(|r| RowResult::outcome(r.line, outcome, Some((code, message.clone()))))
            .collect();
        // One event per user: the rows of a user are synced (and fail) together.
        let lines: Vec<i64> = u.rows.iter().map(|r| r.line).collect();
        let events = deps
            .events
            .event(
                ROLE_SYNC_FAILED,
                json!({
                    "job_id": job.id,
                    "external_id": u.external_id,
                    "lines": lines,
                    "outcome": outcome.as_str(),
                    "reason": {"code": code.as_str(), "message": message},
                }),
            )
            .into_iter()
            .collect();
        UserResult::Rows {
            results,
            events,
            changed: None,
            target_error: false,
        }
    };
    // A call about this user failed for this user only (`scim_rejected`).
    let refused = |e: ScimError| -> UserResult {
        let mut r = fail_rows(Outcome::Failed, ReasonCode::ScimRejected, e.to_string());
        if let UserResult::Rows { target_error, .. } = &mut r {
            *target_error = is_per_user_target_error(&e);
        }
        r
    };

    let found = match find_user(deps, snapshot, &u.external_id, tally).await {
        Ok(found) => found,
        Err(ScimError::Stopped) => return UserResult::Skipped,
        Err(e) if e.is_target_wide() => return UserResult::TargetWide(e),
        Err(e) => return refused(e),
    };
    let n = found.len();
    let mut found = found.into_iter();
    let mut user: ScimUser = match (found.next(), found.next()) {
        (None, _) => {
            return fail_rows(
                Outcome::NotFound,
                ReasonCode::UserNotFound,
                format!(
                    "no user with externalId \"{}\" in the target",
                    u.external_id
                ),
            );
        }
        (Some(user), None) => user,
        (Some(_), Some(_)) => {
            return fail_rows(
                Outcome::Failed,
                ReasonCode::AmbiguousUser,
                format!(
                    "{n} users have externalId \"{}\"; nothing was written",
                    u.external_id
                ),
            );
        }
    };

    let max_rounds = deps.settings.sync.max_conflict_retries + 1;
    for _round in 0..max_rounds {
        let current = user.role_names();
        let target = final_roles(policy, job.mode, &current, &u.desired);
        if let Some(rule) = policy.sod_violation(&target) {
            let message = format!(
                "separation of duties \"{}\": {} ({})",
                rule.name,
                rule.roles.iter().cloned().collect::<Vec<_>>().join(" + "),
                rule.reason
            );
            let results = u
                .rows
                .iter()
                .map(|r| RowResult::rejected(r.line, ReasonCode::SodConflict, message.clone()))
                .collect();
            let events = u
                .rows
                .iter()
                .filter_map(|r| {
                    deps.events.event(
                        ROLE_SYNC_REJECTED,
                        rejected_data(
                            &job.id,
                            r.line,
                            Some((&r.external_id, &r.role_template, &r.license_tier)),
                            ReasonCode::SodConflict.as_str(),
                            &message,
                        ),
                    )
                })
                .collect();
            return UserResult::Rows {
                results,
                events,
                changed: None,
                target_error: false,
            };
        }
        let added: Vec<String> = target.difference(&current).cloned().collect();
        let removed: Vec<String> = current.difference(&target).cloned().collect();
        let before_perms = policy.effective_permissions(&current);
        let after_perms = policy.effective_permissions(&target);
        let perms_added: Vec<String> = after_perms.difference(&before_perms).cloned().collect();
        let perms_removed: Vec<String> = before_perms.difference(&after_perms).cloned().collect();
        let row = |line: i64, outcome: Outcome| RowResult {
            line,
            outcome,
            reason: None,
            user_id: Some(user.id.clone()),
            roles_added: Some(added.clone()),
            roles_removed: Some(removed.clone()),
            permissions_added: (job.dry_run).then(|| perms_added.clone()),
            permissions_removed: (job.dry_run).then(|| perms_removed.clone()),
        };
        if added.is_empty() && removed.is_empty() {
            if let Some(prior) = u.rows.iter().find(|r| r.intent) {
                // An earlier attempt of this chunk wrote the user, then died before recording
                // it: the write was this job's, so the rows are `applied`, with its diff.
                let added = prior.roles_added.clone().unwrap_or_default();
                let removed = prior.roles_removed.clone().unwrap_or_default();
                let mut before: RoleSet = current
                    .difference(&added.iter().cloned().collect())
                    .cloned()
                    .collect();
                before.extend(removed.iter().cloned());
                return applied(deps, policy, job, &u, &user.id, &before, &current);
            }
            let results = u
                .rows
                .iter()
                .map(|r| row(r.line, Outcome::Unchanged))
                .collect();
            return UserResult::Rows {
                results,
                events: Vec::new(),
                changed: Some(false),
                target_error: false,
            };
        }
        if job.dry_run {
            let results = u
                .rows
                .iter()
                .map(|r| row(r.line, Outcome::Planned))
                .collect();
            return UserResult::Rows {
                results,
                events: Vec::new(),
                changed: Some(true),
                target_error: false,
            };
        }
        if tally.is_stopped() {
            // Not even the intent: no write will be sent for this user in this run.
            return UserResult::Skipped;
        }
        let roles: Vec<String> = target.iter().cloned().collect();
        let lines: Vec<i64> = u.rows.iter().map(|r| r.line).collect();
        if let Err(e) = deps
            .store
            .mark_intent(&job.id, &lines, &added, &removed)
            .await
        {
            // Only the report after a crash depends on it; the write itself is safe.
            tracing::warn!(job.id = %job.id, error = %e, "cannot record the write intent");
        }
        match deps
            .scim
            .patch_roles(&user.id, user.version().as_deref(), &roles, tally)
            .await
        {
            Ok(_) => return applied(deps, policy, job, &u, &user.id, &current, &target),
            Err(ScimError::Conflict) => {
                // Someone changed the user since we read it: read again and recompute.
                match deps.scim.get_user(&user.id, tally).await {
                    Ok(fresh) => user = fresh,
                    Err(ScimError::Stopped) => return UserResult::Skipped,
                    Err(ScimError::NotFound) => {
                        return fail_rows(
                            Outcome::NotFound,
                            ReasonCode::UserNotFound,
                            "the user was deleted during the sync".into(),
                        );
                    }
                    Err(e) if e.is_target_wide() => return UserResult::TargetWide(e),
                    Err(e) => {
                        return refused(e);
                    }
                }
            }
            Err(ScimError::NotFound) => {
                return fail_rows(
                    Outcome::NotFound,
                    ReasonCode::UserNotFound,
                    "the user was deleted during the sync".into(),
                );
            }
            Err(ScimError::Stopped) => return UserResult::Skipped,
            Err(e) if e.is_target_wide() => return UserResult::TargetWide(e),
            Err(e) => return refused(e),
        }
    }
    fail_rows(
        Outcome::Failed,
        ReasonCode::RetriesExhausted,
        format!("the user kept changing: {max_rounds} version conflicts in a row"),
    )
}

/// One structured line per role change written to the target, under the `audit` target, at
/// `info`. Role lists are JSON arrays as text (`["Agent","Employee"]`), since a log field holds
/// one value. `request.id` is the `x-request-id` of the POST that submitted the job. Nothing
/// else is logged: no tokens, secrets or bodies.
fn audit_log(
    job: &JobRecord,
    external_id: &str,
    user_id: &str,
    before: &RoleSet,
    after: &RoleSet,
    added: &[String],
    removed: &[String],
) {
    let request_id = job.request_id.as_deref().unwrap_or("");
    tracing::info!(
        target: "audit",
        {
            job.id = %job.id,
            request.id = %request_id,
            user.external_id = %external_id,
            user.id = %user_id,
            roles.before = %json_text(before),
            roles.after = %json_text(after),
            roles.added = %json_text(added),
            roles.removed = %json_text(removed),
            job.mode = job.mode.as_str(),
        },
        "roles changed"
    );
}

/// The rows of a user whose roles this job changed from `before` to `after`, with the
/// `role_sync.completed` event and the audit log line.
fn applied(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    u: &UserWork,
    user_id: &str,
    before: &RoleSet,
    after: &RoleSet,
) -> UserResult {
    let added: Vec<String> = after.difference(before).cloned().collect();
    let removed: Vec<String> = before.difference(after).cloned().collect();
    audit_log(
        job,
        &u.external_id,
        user_id,
        before,
        after,
        &added,
        &removed,
    );
    let before_perms = policy.effective_permissions(before);
    let after_perms = policy.effective_permissions(after);
    let perms_added: Vec<String> = after_perms.difference(&before_perms).cloned().collect();
    let perms_removed: Vec<String> = before_perms.difference(&after_perms).cloned().collect();
    let event = deps.events.event(
        ROLE_SYNC_COMPLETED,
        json!({
            "job_id": job.id,
            "external_id": u.external_id,
            "user_id": user_id,
            "roles_before": before,
            "roles_after": after,
            "roles_added": added,
            "roles_removed": removed,
            "effective_permissions": *after_perms,
            "permissions_added": perms_added,
            "permissions_removed": perms_removed,
        }),
    );
    let results = u
        .rows
        .iter()
        .map(|r| RowResult {
            line: r.line,
            outcome: Outcome::Applied,
            reason: None,
            user_id: Some(user_id.to_owned()),
            roles_added: Some(added.clone()),
            roles_removed: Some(removed.clone()),
            permissions_added: None,
            permissions_removed: None,
        })
        .collect();
    UserResult::Rows {
        results,
        events: event.into_iter().collect(),
        changed: Some(true),
        target_error: false,
    }
}

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
