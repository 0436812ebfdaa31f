//! Stage 3: SCIM workers. `claim` leases chunks from the store; each `worker` syncs the users
//! of its chunk: find the user, decide (`decide`), act.
//!
//! Calls per user: one lookup (`externalId eq`), or none when the job scanned the directory
//! (the scan is in the store, read back per chunk: `reads`); plus one PATCH if the roles
//! differ, plus one re-read and PATCH per ETag conflict. Every PATCH carries `If-Match` with the version the
//! decision was made on, so a concurrent change by someone else is never overwritten blindly:
//! it answers 409/412, and the user is re-read and decided again.
//!
//! A chunk stops early, and is released uncommitted, on a target-wide failure or when most of
//! the job's latest users were refused by the target (`stops`).
//!
//! A cancel stops a chunk too, but it is never re-run, so what its users came to is committed:
//! a user whose write was sent is recorded as what the write did (`applied`, or `failed`), and
//! the users no write was sent for become `cancelled`. A user whose write may have been sent
//! without this run learning its result (its call dropped after a timeout, its chunk's owner
//! dead) is read back once, never written: `applied` if the user holds what the write would
//! have made, else `cancelled` (`settle`).

use super::circuit::TargetState;
use super::decide::{Decision, Intent, Undo, decide, decide_revert};
use super::reads::{Snapshot, chunk_snapshot, find_user};
use super::stops::{ChunkRun, Stop, is_per_user_target_error};
use super::fence;
use super::users::{UserRows, group_users};
use super::{Deps, bulk, lifecycle, record_depth};
use crate::audit::events::{
    RoleSyncCompleted, RoleSyncConflictDetected, RoleSyncDriftDetected, RoleSyncFailed,
    RoleSyncRejected,
};
use crate::audit::log::RoleChangeLine;
use crate::domain::{
    EventType, JobKind, JobStatus, Outcome, PausedReason, ReadMethod, ReasonCode, WriteApi,
};
use crate::policy::{Policy, RoleChange, RoleSet};
use crate::scim::{CallTally, ScimError, ScimUser};
use crate::store::{
    CANCELLED_MESSAGE, ChunkClaim, ChunkDone, DesiredUpdate, ItemRecord, JobDeltas, JobRecord,
    OutboxEvent, RowResult,
};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a chunk given back after a store error waits before it is claimed again.
const CHUNK_ERROR_BACKOFF_MS: i64 = 5_000;

/// What a worker hands to the results stage.
pub(crate) enum ChunkOutcome {
    /// Every row of the chunk has an outcome.
    Done(ChunkClaim, ChunkDone),
    /// The chunk stopped early (`stops`): give it back, keep the calls spent. The writes the
    /// run sent are not recorded by it: each gets its audit line saying so.
    Release(ChunkClaim, JobDeltas, Stop, Vec<RoleChangeLine>),
}

/// Source of the sync stages: leases ready chunks while the circuit is closed.
pub(crate) async fn claim(deps: Deps, tx: mpsc::Sender<ChunkClaim>, stop: CancellationToken) {
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
                lifecycle::finish_if_done(deps, &id).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for jobs to finish"),
    }
}

pub(crate) async fn worker(
    deps: Deps,
    rx: Arc<Mutex<mpsc::Receiver<ChunkClaim>>>,
    tx: mpsc::Sender<(ChunkOutcome, tracing::Span)>,
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

/// What became of one user of a chunk.
enum UserResult {
    /// Every row of the user has an outcome.
    Rows {
        results: Vec<RowResult>,
        events: Vec<OutboxEvent>,
        changed: Option<bool>,
        /// The user failed on a per-user target error (counts towards `error_ratio`).
        target_error: bool,
        /// How the user's desired state moves once these rows are committed (boxed: most
        /// results carry none).
        desired: Option<Box<DesiredUpdate>>,
        /// A reconcile found the user drifted.
        drifted: bool,
        /// The `roles changed` line of a user recorded `applied`, logged after the commit.
        audit: Option<Box<RoleChangeLine>>,
    },
    TargetWide(ScimError),
    /// A call failed for a reason that may pass: the rows stay pending, tried again in a later
    /// run of the chunk (after a backoff).
    Retry {
        lines: Vec<i64>,
    },
    /// Not synced: the chunk was stopped before or during this user. A write this run sent
    /// for the user, if any, is in `UserRun::sent`.
    Skipped,
    /// The Authorization path: the user's change is decided and its intent recorded; it is
    /// written with the chunk's other users by bulk calls (`write_deferred`).
    Deferred {
        user_id: String,
        change: RoleChange,
    },
}

/// One user of a chunk run: what became of them, and the change this run sent them, if it
/// sent a PATCH (whatever its answer, or none).
struct UserRun {
    user: UserRows<ItemRecord>,
    result: UserResult,
    sent: Option<RoleChange>,
}

/// A user left without an outcome by a stopped run, and the change the run sent them, if any.
type Unsettled = (UserRows<ItemRecord>, Option<RoleChange>);

/// Reads the chunk's job and rows, then runs the chunk inside its `chunk` span (`job.id`,
/// `chunk`, `attempt`), a child of the request that submitted the job when traces were on
/// then. The span goes on with the outcome to the results stage.
async fn sync_chunk(deps: &Deps, claim: ChunkClaim) -> Option<(ChunkOutcome, tracing::Span)> {
    let (job, items) = match tokio::try_join!(
        deps.store.get_job(&claim.job_id),
        deps.store.chunk_items(&claim.job_id, claim.chunk_no)
    ) {
        Ok((Some(job), items)) => (job, items),
        Ok((None, _)) => return None,
        Err(e) => {
            // Given back now, claimable again after a backoff: never left leased on an error.
            let retry_at = crate::store::now_ms() + CHUNK_ERROR_BACKOFF_MS;
            tracing::warn!(job.id = %claim.job_id, chunk = claim.chunk_no, error = %e, "cannot read a chunk; released, retried in 5 s");
            if let Err(e) = deps
                .store
                .release_chunk(&claim, &deps.owner, Some(retry_at), true)
                .await
            {
                tracing::warn!(job.id = %claim.job_id, error = %e, "cannot release the chunk either; its lease runs out");
            }
            return None;
        }
    };
    let span = tracing::info_span!(
        "chunk",
        job.id = %job.id,
        chunk = claim.chunk_no,
        attempt = claim.attempts
    );
    crate::telemetry::set_parent(&span, job.traceparent.as_deref());
    let outcome = run_chunk(deps, claim, job, items)
        .instrument(span.clone())
        .await;
    Some((outcome, span))
}

async fn run_chunk(
    deps: &Deps,
    claim: ChunkClaim,
    job: JobRecord,
    items: Vec<ItemRecord>,
) -> ChunkOutcome {
    let policy = deps.policy_for(&job.id);
    let users = group_users(items);
    // Renewed by the heartbeat while this run holds it, and not after: a run that ends or
    // panics lets its lease run out.
    let _live = deps.live.chunk(&claim.job_id, claim.chunk_no, claim.fence);
    if job.status == JobStatus::Cancelled {
        // Claimed only to be settled (`Store::claim_chunk`): its owner died mid-run, or it was
        // kept open for rows whose write may have been sent. Nothing is written.
        let mut done = ChunkDone::default();
        let users = users.into_iter().map(|u| (u, None)).collect();
        settle(deps, &policy, &job, users, &mut done).await;
        return ChunkOutcome::Done(claim, done);
    }
    let run = Arc::new(ChunkRun::for_claim(&claim, deps.lease_ms()));
    deps.chunk_runs.register(&job.id, &run);
    let mut judge = deps.error_ratios.judge(&job.id, &deps.settings.sync);
    let concurrency = deps.settings.target.max_concurrency;
    // The job's read of the directory, for this chunk's users (none when it looks them up).
    let ids: Vec<&str> = users.iter().map(|u| u.external_id.as_str()).collect();
    let snapshot = chunk_snapshot(deps, &job.id, read_method(&job), &ids).await;
    let mut done = ChunkDone::default();
    // Runs of this chunk are bounded: past the bound its users fail without a call.
    let max_runs = i64::from(deps.settings.sync.max_chunk_attempts);
    let exhausted = claim.attempts > max_runs;
    let mut unsettled: Vec<Unsettled> = Vec::new();
    // The Authorization path: users decided to be written, written together after the loop.
    let mut deferred: Vec<Deferred> = Vec::new();
    {
        let mut outcomes = futures::stream::iter(users)
            .map(|u| {
                let (run, policy, job, snapshot, claim) =
                    (&run, &policy, &job, snapshot.as_ref(), &claim);
                async move {
                    let mut sent = None;
                    let result = if exhausted {
                        let report = Report {
                            deps,
                            policy,
                            job,
                            user: &u,
                        };
                        let why = format!("the user's chunk was run {max_runs} times");
                        report.failed(Outcome::Failed, ReasonCode::RetriesExhausted, &why)
                    } else {
                        start_user(deps, policy, job, claim, snapshot, &u, run, &mut sent).await
                    };
                    UserRun {
                        user: u,
                        result,
                        sent,
                    }
                }
            })
            .buffer_unordered(concurrency);
        while let Some(user_run) = outcomes.next().await {
            if let UserResult::Deferred { user_id, change } = user_run.result {
                deferred.push((user_run.user, user_id, change));
                continue;
            }
            absorb(
                deps,
                &job,
                &run,
                &mut judge,
                &mut done,
                &mut unsettled,
                user_run,
            );
        }
    }
    if !deferred.is_empty() {
        if run.stopped().is_some() {
            // Stopped before the bulk calls: nothing was sent for these users.
            unsettled.extend(deferred.into_iter().map(|(u, _, _)| (u, None)));
        } else {
            for user_run in write_deferred(deps, &policy, &job, &run, deferred).await {
                absorb(
                    deps,
                    &job,
                    &run,
                    &mut judge,
                    &mut done,
                    &mut unsettled,
                    user_run,
                );
            }
        }
    }
    let (requests, retries, rate_limited) = run.tally.snapshot();
    done.deltas.scim_requests += requests;
    done.deltas.scim_retries += retries;
    done.deltas.scim_rate_limited += rate_limited;
    match run.stopped() {
        // No re-run follows a cancel: the users done are committed as they came out, the
        // others settled (read back if a write may have reached them, else cancelled).
        Some(Stop::Cancelled) => {
            settle(deps, &policy, &job, unsettled, &mut done).await;
            ChunkOutcome::Done(claim, done)
        }
        // Outcomes reached before the stop are discarded with the chunk: the re-run reads
        // them back as already right, at the cost of one read each.
        Some(why) => {
            let mut written = done.audit;
            written.extend(unsettled.iter().filter_map(|(u, sent)| {
                let change = sent.as_ref()?;
                Some(RoleChangeLine::new(
                    &job.id,
                    job.request_id.as_deref(),
                    job.mode,
                    &u.external_id,
                    "",
                    change,
                ))
            }));
            ChunkOutcome::Release(claim, done.deltas, why.clone(), written)
        }
        None => {
            deps.error_ratios.commit(
                &job.id,
                judge.outcomes(),
                deps.settings.sync.error_ratio_window,
            );
            if !done.retry_lines.is_empty() {
                done.retry_at_ms = Some(crate::store::now_ms() + retry_backoff_ms(claim.attempts));
            }
            ChunkOutcome::Done(claim, done)
        }
    }
}

/// The wait before a chunk with users to retry runs again: full jitter up to 2 s × 2^(run - 1),
/// at most 60 s.
fn retry_backoff_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 5)).unwrap_or(5);
    let cap = (2_000u64 << exp).min(60_000);
    let d = crate::scim::retry::backoff(0, Duration::from_millis(cap), Duration::from_millis(cap));
    i64::try_from(d.as_millis()).unwrap_or(60_000).max(500)
}

/// Syncs one user of a run unless the run is stopped. Checked before the user's first call:
/// once the chunk is stopped no new user starts (calls of users already started are dropped by
/// the tally).
#[allow(clippy::too_many_arguments)]
async fn start_user(
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
    sync_user(deps, policy, job, claim, snapshot, u, run, sent).await
}

/// How the planner chose to read the job's users (`estimate.strategy`).
fn read_method(job: &JobRecord) -> ReadMethod {
    job.estimate
        .as_ref()
        .map_or(ReadMethod::Lookup, |e| e.strategy)
}

/// Whether the planner chose the Authorization path for the job (`estimate.write_api`).
fn writes_in_bulk(job: &JobRecord) -> bool {
    job.estimate
        .as_ref()
        .is_some_and(|e| e.write_api == WriteApi::Authorization)
}

/// A user of the Authorization path whose change waits for the chunk's bulk calls.
type Deferred = (UserRows<ItemRecord>, String, RoleChange);

/// Adds one user's result to the chunk's outcomes; stops the chunk (and the job's other
/// chunks) on a target-wide failure or a tripped error ratio.
fn absorb(
    deps: &Deps,
    job: &JobRecord,
    run: &ChunkRun,
    judge: &mut super::stops::Judge,
    done: &mut ChunkDone,
    unsettled: &mut Vec<Unsettled>,
    UserRun { user, result, sent }: UserRun,
) {
    match result {
        UserResult::Rows {
            results,
            events,
            changed,
            target_error,
            desired,
            drifted,
            audit,
        } => {
            record(done, results, events, changed);
            done.audit.extend(audit.map(|a| *a));
            done.desired.extend(desired.map(|d| *d));
            done.drifted += u64::from(drifted);
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
            unsettled.push((user, sent));
        }
        // A cancel settles the user (no re-run follows); otherwise a later run retries.
        UserResult::Retry { .. } if matches!(run.stopped(), Some(Stop::Cancelled)) => {
            unsettled.push((user, sent))
        }
        UserResult::Retry { lines } => done.retry_lines.extend(lines),
        UserResult::Skipped => unsettled.push((user, sent)),
        // Only produced by `sync_user` for the Authorization path and taken out before.
        UserResult::Deferred { .. } => unsettled.push((user, sent)),
    }
}

/// The Authorization path's writes for a chunk (`bulk`): one call per role per
/// `target.bulk_max_subjects` users, a refused batch bisected; then each user's own result
/// (`applied` with the change computed from the read, or why not), its event and audit line.
async fn write_deferred(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    run: &ChunkRun,
    deferred: Vec<Deferred>,
) -> Vec<UserRun> {
    let tally = &run.tally;
    let errors = match deps.scim.authz_catalog(tally).await {
        Ok(catalog) => {
            let changes: Vec<&RoleChange> = deferred.iter().map(|d| &d.2).collect();
            let ids: Vec<&str> = deferred.iter().map(|d| d.1.as_str()).collect();
            let batches = bulk::batches(&changes, deps.settings.target.bulk_max_subjects);
            bulk::write(&deps.scim, &catalog, tally, &ids, batches).await
        }
        Err(e) => {
            // No bulk call was sent: every user shares the catalog's failure.
            return deferred
                .into_iter()
                .map(|(user, _, _)| {
                    let report = Report {
                        deps,
                        policy,
                        job,
                        user: &user,
                    };
                    let result = report.call_failed(e.clone());
                    UserRun {
                        user,
                        result,
                        sent: None,
                    }
                })
                .collect();
        }
    };
    let mut out = Vec::with_capacity(deferred.len());
    for ((user, user_id, change), error) in deferred.into_iter().zip(errors) {
        let report = Report {
            deps,
            policy,
            job,
            user: &user,
        };
        let result = match error {
            None => report.applied(&user_id, &change),
            // Refused alone: deleted since the read (a 404 on reading it), else refused.
            Some(ScimError::Rejected {
                status: 400,
                detail,
            }) => match deps.scim.get_user(&user_id, tally).await {
                // An id known from an earlier job (`reads`), gone since: forgotten, and the
                // user looked up by a later run of the chunk.
                Err(ScimError::NotFound) if read_method(job) == ReadMethod::Grants => {
                    if let Err(e) = deps
                        .store
                        .forget_id(&job.id, &user.external_id, &user_id)
                        .await
                    {
                        tracing::warn!(error = %e, "cannot forget a stale user id");
                    }
                    UserResult::Retry {
                        lines: user.lines().collect(),
                    }
                }
                Err(ScimError::NotFound) => report.deleted(),
                _ => report.fail_rows(
                    Outcome::Failed,
                    ReasonCode::ScimRejected,
                    &format!("the bulk grant call refused this user (400): {detail}"),
                    true,
                ),
            },
            // A 404 on a role call is about the role, not the user.
            Some(ScimError::NotFound) => report.fail_rows(
                Outcome::Failed,
                ReasonCode::ScimRejected,
                "the target does not know one of the roles (404)",
                true,
            ),
            Some(e) => report.call_failed(e),
        };
        out.push(UserRun {
            user,
            result,
            sent: Some(change),
        });
    }
    out
}

/// Adds a user's rows, events and change to a chunk's outcomes.
fn record(
    done: &mut ChunkDone,
    results: Vec<RowResult>,
    events: Vec<OutboxEvent>,
    changed: Option<bool>,
) {
    match changed {
        Some(true) => done.deltas.users_changed += 1,
        Some(false) => done.deltas.users_unchanged += 1,
        None => {}
    }
    done.results.extend(results);
    done.events.extend(events);
}

/// Gives each user of a cancelled job left without an outcome the outcome that is true in the
/// target, sending no write: a user no write may have reached (none sent by this run, no intent
/// recorded by an earlier one) is `cancelled` without a call; the others are read back once
/// (`settle_user`).
async fn settle(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    users: Vec<Unsettled>,
    done: &mut ChunkDone,
) {
    // A tally of its own: the run's was stopped by the cancel, and these reads are how the
    // cancel learns what was written. It is never stopped; a shutdown drops the whole chunk
    // (its lease is released and the next claim settles it).
    let tally = CallTally::default();
    {
        let mut settled = futures::stream::iter(users)
            .map(|(u, sent)| {
                let tally = &tally;
                async move { settle_user(deps, policy, job, &u, sent.as_ref(), tally).await }
            })
            .buffer_unordered(deps.settings.target.max_concurrency);
        while let Some(r) = settled.next().await {
            if let UserResult::Rows {
                results,
                events,
                changed,
                desired,
                drifted,
                audit,
                ..
            } = r
            {
                record(done, results, events, changed);
                done.audit.extend(audit.map(|a| *a));
                done.desired.extend(desired.map(|d| *d));
                done.drifted += u64::from(drifted);
            }
        }
    }
    let (requests, retries, rate_limited) = tally.snapshot();
    done.deltas.scim_requests += requests;
    done.deltas.scim_retries += retries;
    done.deltas.scim_rate_limited += rate_limited;
}

/// One user of a cancelled job whose write may have been sent: by this run (`sent`), or by an
/// earlier run of the chunk that recorded its intent. Read once, fresh (a snapshot predates the
/// write): `applied` with that write's diff if the user holds the roles it would have made
/// (`Decision::AlreadyApplied`), else `cancelled`. If the read fails, the rows are `failed`:
/// the write's fate is unknown, and `cancelled` would claim nothing was written.
async fn settle_user(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    u: &UserRows<ItemRecord>,
    sent: Option<&RoleChange>,
    tally: &CallTally,
) -> UserResult {
    let report = Report {
        deps,
        policy,
        job,
        user: u,
    };
    let prior = sent
        .map(|c| Intent {
            added: &c.added,
            removed: &c.removed,
        })
        .or_else(|| stored_intent(u));
    let Some(prior) = prior else {
        return report.cancelled();
    };
    let found = match find_user(deps, None, &u.external_id, tally).await {
        Ok(found) => found,
        Err(e) => {
            return report.failed(
                Outcome::Failed,
                ReasonCode::ScimRejected,
                &format!(
                    "the job was cancelled while a write to this user may have been in flight, \
                     and reading the user back failed: {e}"
                ),
            );
        }
    };
    let user = match report.one_user(found) {
        Ok(user) => user,
        Err(r) => return r,
    };
    let wanted = Wanted::of(policy, job, u);
    let current = user.role_names();
    match wanted.decide(policy, job, &current, Some(prior)) {
        Decision::AlreadyApplied(change) => report.applied(&user.id, &change),
        // The user does not hold what the write would have made: it did not land.
        _ => report.cancelled(),
    }
}

/// What a job wants of one user, read once from the user's rows.
enum Wanted {
    /// A sync or a reconcile: the user's desired set (expanded), reached in the job's mode.
    Desired(RoleSet),
    /// A revert: the roles the reverted job found the user with and left them with.
    Undo { before: RoleSet, after: RoleSet },
}

impl Wanted {
    fn of(policy: &Policy, job: &JobRecord, u: &UserRows<ItemRecord>) -> Wanted {
        match job.kind {
            JobKind::Sync | JobKind::Reconcile => Wanted::Desired(u.desired(policy)),
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
    fn decide(
        &self,
        policy: &Policy,
        job: &JobRecord,
        current: &RoleSet,
        prior: Option<Intent<'_>>,
    ) -> Decision {
        match self {
            Wanted::Desired(desired) => {
                decide(policy, job.mode, current, desired, job.dry_run, prior)
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
fn stored_intent(u: &UserRows<ItemRecord>) -> Option<Intent<'_>> {
    u.rows.iter().find(|r| r.intent).map(|r| Intent {
        added: r.roles_added.as_deref().unwrap_or_default(),
        removed: r.roles_removed.as_deref().unwrap_or_default(),
    })
}

/// The user's intent (roles added, removed) as the store holds it now, called once the user
/// was read from the target. A chunk claimed for the first time (fence 1) had no earlier
/// owner, so its rows as read at the claim are enough; otherwise they are read again, so an
/// intent an earlier owner recorded after this run read the rows is not missed (`fence`).
async fn fresh_intent(
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
async fn sync_user(
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
    let prior = prior_owned.as_ref().map(|(added, removed)| Intent {
        added,
        removed,
    });
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
            // Someone changed the user since we read it: read again and decide again.
            Err(ScimError::Conflict) => match deps.scim.get_user(&user.id, tally).await {
                Ok(fresh) => fresh,
                Err(ScimError::NotFound) => return report.deleted(),
                Err(e) => return report.call_failed(e),
            },
            Err(ScimError::NotFound) => return report.deleted(),
            Err(e) => return report.call_failed(e),
        };
    }
    report.failed(
        Outcome::Failed,
        ReasonCode::RetriesExhausted,
        &format!("the user kept changing: {max_rounds} version conflicts in a row"),
    )
}

/// What a reconcile found of one user: drifted or not, and the event saying so.
#[derive(Default)]
struct Drift {
    found: bool,
    event: Option<OutboxEvent>,
}

/// Turns what happened to one user into its rows' results and audit events.
struct Report<'a> {
    deps: &'a Deps,
    policy: &'a Policy,
    job: &'a JobRecord,
    user: &'a UserRows<ItemRecord>,
}

impl Report<'_> {
    /// The one user of the target with the user's external id; else the user's result.
    async fn find_one(
        &self,
        snapshot: Option<&Snapshot>,
        tally: &CallTally,
    ) -> Result<ScimUser, UserResult> {
        let external_id = self.user.external_id.as_str();
        let found = find_user(self.deps, snapshot, external_id, tally)
            .await
            .map_err(|e| self.call_failed(e))?;
        self.one_user(found)
    }

    /// The one user found; else the user's result (`not_found`, or `failed` as ambiguous).
    fn one_user(&self, found: Vec<ScimUser>) -> Result<ScimUser, UserResult> {
        let external_id = self.user.external_id.as_str();
        let n = found.len();
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(user), None) => Ok(user),
            (None, _) => Err(self.failed(
                Outcome::NotFound,
                ReasonCode::UserNotFound,
                &format!("no user with externalId \"{external_id}\" in the target"),
            )),
            (Some(_), Some(_)) => Err(self.failed(
                Outcome::Failed,
                ReasonCode::AmbiguousUser,
                &format!("{n} users have externalId \"{external_id}\"; nothing was written"),
            )),
        }
    }

    /// The rows of a user this job wrote, or found written by an earlier attempt of its
    /// chunk: `applied`, with the `role_sync.completed` event and the audit log line.
    fn applied(&self, user_id: &str, change: &RoleChange) -> UserResult {
        let (job, u) = (self.job, self.user);
        let drifted = self.drift(user_id, change);
        let audit = RoleChangeLine::new(
            &job.id,
            job.request_id.as_deref(),
            job.mode,
            &u.external_id,
            user_id,
            change,
        );
        let event = self.deps.events.event(
            EventType::RoleSyncCompleted,
            RoleSyncCompleted::new(self.policy, &job.id, &u.external_id, user_id, change),
        );
        let before: Vec<String> = change.before.iter().cloned().collect();
        let after: Vec<String> = change.after.iter().cloned().collect();
        let results = u
            .rows
            .iter()
            .map(|r| RowResult {
                line: r.line,
                outcome: Outcome::Applied,
                reason: None,
                user_id: Some(user_id.to_owned()),
                roles_added: Some(change.added.clone()),
                roles_removed: Some(change.removed.clone()),
                permissions_added: None,
                permissions_removed: None,
                roles_before: Some(before.clone()),
                roles_after: Some(after.clone()),
            })
            .collect();
        UserResult::Rows {
            results,
            events: event.into_iter().chain(drifted.event).collect(),
            changed: Some(true),
            target_error: false,
            desired: self.desired_update().map(Box::new),
            drifted: drifted.found,
            audit: Some(Box::new(audit)),
        }
    }

    /// A write an earlier attempt of this job made, found in conflict with what the user holds
    /// now (`Decision::AppliedWithConflict`): recorded `applied` as it happened, and the
    /// conflict raised on its own (`role_sync.conflict_detected`, a warning in the audit log,
    /// `rolesync_conflicts_after_write_total` once committed). Nothing more is written.
    fn applied_with_conflict(
        &self,
        user_id: &str,
        change: &RoleChange,
        reason: ReasonCode,
        message: &str,
    ) -> UserResult {
        let (job, u) = (self.job, self.user);
        tracing::warn!(
            target: "audit",
            {
                job.id = %job.id,
                user.external_id = %u.external_id,
                user.id = %user_id,
                roles.current = %json_text(&change.after),
                reason = reason.as_str(),
            },
            "a write this job made earlier is now in conflict: {message}"
        );
        let conflict = self.deps.events.event(
            EventType::ConflictDetected,
            RoleSyncConflictDetected {
                job_id: &job.id,
                external_id: &u.external_id,
                user_id,
                roles_current: &change.after,
                reason: crate::audit::events::Reason {
                    code: reason.as_str(),
                    message,
                },
            },
        );
        let mut result = self.applied(user_id, change);
        if let UserResult::Rows { events, .. } = &mut result {
            events.extend(conflict);
        }
        result
    }

    /// How the user's desired state moves when the job applied its change or found it in
    /// place: a sync sets it to the user's desired set; a revert swaps back the state the
    /// reverted job set (`DesiredUpdate`); a reconcile applies it and leaves it. A dry run
    /// never moves it.
    fn desired_update(&self) -> Option<DesiredUpdate> {
        let (job, u) = (self.job, self.user);
        if job.dry_run {
            return None;
        }
        match job.kind {
            JobKind::Sync => Some(DesiredUpdate::Set {
                external_id: u.external_id.clone(),
                roles: u.desired(self.policy).into_iter().collect(),
                job_id: job.id.clone(),
            }),
            JobKind::Revert => Some(DesiredUpdate::Revert {
                external_id: u.external_id.clone(),
                original_job_id: job.original_job_id.clone()?,
                job_id: job.id.clone(),
            }),
            JobKind::Reconcile => None,
        }
    }

    /// A reconcile's user whose roles are not what their desired state implies (`change` is
    /// the fix, written or planned): the `role_sync.drift_detected` event and the audit line.
    /// Nothing for other kinds of job.
    fn drift(&self, user_id: &str, change: &RoleChange) -> Drift {
        let (job, u) = (self.job, self.user);
        if job.kind != JobKind::Reconcile || change.is_empty() {
            return Drift::default();
        }
        let desired = u.desired(self.policy);
        let fixed = !job.dry_run;
        tracing::info!(
            target: "audit",
            {
                job.id = %job.id,
                user.external_id = %u.external_id,
                user.id = %user_id,
                roles.current = %json_text(&change.before),
                roles.desired = %json_text(&desired),
                roles.missing = %json_text(&change.added),
                roles.extra = %json_text(&change.removed),
                job.mode = job.mode.as_str(),
                fixed,
            },
            "drift detected"
        );
        let event = self.deps.events.event(
            EventType::DriftDetected,
            RoleSyncDriftDetected {
                job_id: &job.id,
                external_id: &u.external_id,
                user_id,
                mode: job.mode,
                roles_current: &change.before,
                roles_desired: &desired,
                roles_expected: &change.after,
                roles_added: &change.added,
                roles_removed: &change.removed,
                fixed,
            },
        );
        Drift { found: true, event }
    }

    /// The rows of a user nothing was written for: `unchanged` (no change) or `planned` (the
    /// change a dry run would write). A dry run also reports the permissions the change grants
    /// and takes away. No event.
    fn unwritten(
        &self,
        user_id: &str,
        outcome: Outcome,
        change: Option<&RoleChange>,
    ) -> UserResult {
        let (added, removed) = change.map_or((Vec::new(), Vec::new()), |c| {
            (c.added.clone(), c.removed.clone())
        });
        let permissions = self.job.dry_run.then(|| match change {
            Some(c) => {
                let before = self.policy.effective_permissions(&c.before);
                let after = self.policy.effective_permissions(&c.after);
                (
                    after.difference(&before).cloned().collect(),
                    before.difference(&after).cloned().collect(),
                )
            }
            None => (Vec::new(), Vec::new()),
        });
        let (perms_added, perms_removed) = permissions.unzip();
        let sets = change.map(|c| {
            (
                c.before.iter().cloned().collect::<Vec<_>>(),
                c.after.iter().cloned().collect::<Vec<_>>(),
            )
        });
        let (before, after) = sets.unzip();
        let results = self
            .user
            .rows
            .iter()
            .map(|r| RowResult {
                line: r.line,
                outcome,
                reason: None,
                user_id: Some(user_id.to_owned()),
                roles_added: Some(added.clone()),
                roles_removed: Some(removed.clone()),
                permissions_added: perms_added.clone(),
                permissions_removed: perms_removed.clone(),
                roles_before: before.clone(),
                roles_after: after.clone(),
            })
            .collect();
        let drifted = change.map(|c| self.drift(user_id, c)).unwrap_or_default();
        UserResult::Rows {
            results,
            events: drifted.event.into_iter().collect(),
            changed: Some(outcome == Outcome::Planned),
            target_error: false,
            // A user found already right holds the desired set as much as one just written.
            desired: (outcome == Outcome::Unchanged)
                .then(|| self.desired_update())
                .flatten()
                .map(Box::new),
            drifted: drifted.found,
            audit: None,
        }
    }

    /// Every row of the user `rejected` with `reason`, one `role_sync.rejected` event per row.
    fn rejected(&self, reason: ReasonCode, message: &str) -> UserResult {
        let job_id = self.job.id.as_str();
        let rows = &self.user.rows;
        let results = rows
            .iter()
            .map(|r| RowResult::rejected(r.line, reason, message))
            .collect();
        let events = rows
            .iter()
            .filter_map(|r| {
                let data = RoleSyncRejected::new(job_id, r.line, reason, message).of_row(
                    &r.external_id,
                    &r.role_template,
                    &r.license_tier,
                );
                self.deps.events.event(EventType::RoleSyncRejected, data)
            })
            .collect();
        UserResult::Rows {
            results,
            events,
            changed: None,
            target_error: false,
            desired: None,
            drifted: false,
            audit: None,
        }
    }

    /// Every row of the user with `outcome` and the reason, and one `role_sync.failed` event:
    /// the rows of a user are synced, and fail, together.
    fn failed(&self, outcome: Outcome, code: ReasonCode, message: &str) -> UserResult {
        self.fail_rows(outcome, code, message, false)
    }

    /// `failed`, telling whether the target refused this user (counts towards `error_ratio`).
    fn fail_rows(
        &self,
        outcome: Outcome,
        code: ReasonCode,
        message: &str,
        target_error: bool,
    ) -> UserResult {
        let u = self.user;
        let results = u
            .rows
            .iter()
            .map(|r| RowResult::outcome(r.line, outcome, Some((code, message.to_owned()))))
            .collect();
        let data = RoleSyncFailed::new(
            &self.job.id,
            &u.external_id,
            u.lines().collect(),
            outcome,
            code,
            message,
        );
        UserResult::Rows {
            results,
            events: self
                .deps
                .events
                .event(EventType::RoleSyncFailed, data)
                .into_iter()
                .collect(),
            changed: None,
            target_error,
            desired: None,
            drifted: false,
            audit: None,
        }
    }

    /// Every row of the user `cancelled`: nothing of this job reached the user. No event.
    fn cancelled(&self) -> UserResult {
        let results = self
            .user
            .rows
            .iter()
            .map(|r| {
                let reason = (ReasonCode::Cancelled, CANCELLED_MESSAGE.to_owned());
                RowResult::outcome(r.line, Outcome::Cancelled, Some(reason))
            })
            .collect();
        UserResult::Rows {
            results,
            events: Vec::new(),
            changed: None,
            target_error: false,
            desired: None,
            drifted: false,
            audit: None,
        }
    }

    /// The user vanished between the read and the write.
    fn deleted(&self) -> UserResult {
        self.failed(
            Outcome::NotFound,
            ReasonCode::UserNotFound,
            "the user was deleted during the sync",
        )
    }

    /// A call about the user failed: the chunk stopped (no result), the whole target failed
    /// (the chunk stops), the call failed for a reason that may pass (the user is retried in a
    /// later run of the chunk, up to `sync.max_user_attempts`, unless enough other users fail
    /// too: then the target is down), or the target refused this user only (`scim_rejected`,
    /// which counts towards `error_ratio` when the target itself refused).
    fn call_failed(&self, e: ScimError) -> UserResult {
        let sync = &self.deps.settings.sync;
        match e {
            ScimError::Stopped => UserResult::Skipped,
            ScimError::Unavailable { .. } => {
                let window = Duration::from_secs(sync.outage_window_secs);
                let user = self.user.external_id.as_str();
                if self
                    .deps
                    .circuit
                    .user_failed(user, sync.outage_min_users, window)
                {
                    return UserResult::TargetWide(e);
                }
                // Attempts across runs of the chunk: the most any of the user's rows recorded.
                let attempts = self.user.rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
                if attempts >= i64::from(sync.max_user_attempts) {
                    self.fail_rows(
                        Outcome::Failed,
                        ReasonCode::RetriesExhausted,
                        &format!("{e} (in {attempts} attempts)"),
                        true,
                    )
                } else {
                    UserResult::Retry {
                        lines: self.user.lines().collect(),
                    }
                }
            }
            e if e.is_target_wide() => UserResult::TargetWide(e),
            e => self.fail_rows(
                Outcome::Failed,
                ReasonCode::ScimRejected,
                &e.to_string(),
                is_per_user_target_error(&e),
            ),
        }
    }
}

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
