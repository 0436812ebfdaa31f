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
//! have made, else `cancelled` (`settle`). If that read fails, the user stays pending and the
//! chunk open, and a later claim reads them again: neither `cancelled` nor `failed` would be
//! known to be true.

mod awaiting;
mod deferred;
mod report;
mod settle;
mod user;

use deferred::write_deferred;
use report::Report;
use settle::{read_back_or, settle};
use user::start_user;

use super::circuit::TargetState;
use super::decide::{Decision, Intent, Undo, decide, decide_revert};
use super::fence;
use super::reads::{Snapshot, chunk_snapshot, find_user};
use super::stops::{ChunkRun, Stop, is_per_user_target_error};
use super::users::{UserRows, group_users};
use super::{Deps, bulk, lifecycle, record_depth};
use crate::audit::events::{
    RoleSyncCompleted, RoleSyncConflictDetected, RoleSyncDriftDetected, RoleSyncFailed,
    RoleSyncRejected,
};
use crate::audit::log::{AuditLine, RoleChangeLine};
use crate::domain::{
    EventType, JobKind, JobStatus, Mode, Outcome, PausedReason, ReadMethod, ReasonCode, WriteApi,
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
        /// The audit lines of the user (`roles changed` of a user recorded `applied`, `drift
        /// detected`, a conflict after a write), logged after the commit.
        audit: Vec<AuditLine>,
    },
    TargetWide(ScimError),
    /// A call failed for a reason that may pass: the rows stay pending, tried again in a later
    /// run of the chunk (after a backoff).
    Retry {
        lines: Vec<i64>,
    },
    /// The user is not in the target yet and may still appear (a joiner awaiting their
    /// account, `awaiting`): the rows stay pending, looked up again at `next_at_ms`.
    AwaitUser {
        lines: Vec<i64>,
        since_ms: i64,
        next_at_ms: i64,
    },
    /// The user's rows are dated later (`effective_at`): held, pending, until `at_ms`.
    Scheduled {
        lines: Vec<i64>,
        at_ms: i64,
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
        settle(deps, &policy, &job, users, claim.attempts, &mut done).await;
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
                        let failure =
                            report.failed(Outcome::Failed, ReasonCode::RetriesExhausted, &why);
                        // An earlier run may have written the user (its intent is on record).
                        read_back_or(&report, None, &run.tally, failure).await
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
            settle(deps, &policy, &job, unsettled, claim.attempts, &mut done).await;
            ChunkOutcome::Done(claim, done)
        }
        // Outcomes reached before the stop are discarded with the chunk: the re-run reads
        // them back as already right, at the cost of one read each.
        Some(why) => {
            let mut written: Vec<RoleChangeLine> = done
                .audit
                .into_iter()
                .filter_map(AuditLine::into_role_change)
                .collect();
            written.extend(unsettled.iter().filter_map(|(u, sent)| {
                let change = sent.as_ref()?;
                Some(
                    RoleChangeLine::new(
                        &job.id,
                        job.request_id.as_deref(),
                        u.mode(job.mode),
                        &u.external_id,
                        "",
                        change,
                    )
                    .by(job.submitted_by.as_ref()),
                )
            }));
            ChunkOutcome::Release(claim, done.deltas, why.clone(), written)
        }
        None => {
            // Every user of a committed run has an outcome, a retry or a wait; a user left
            // without one (a call refused by a stop this run did not see) is run again by the
            // chunk's next claim, never dropped with the chunk. Unreachable while every
            // refusal stops the run (`ChunkRun::stopped`); kept so that no later path can
            // leave rows pending under a chunk marked `done`.
            if !unsettled.is_empty() {
                tracing::warn!(
                    users = unsettled.len(),
                    "users left without an outcome by a run not stopped; retried"
                );
                done.retry_lines
                    .extend(unsettled.iter().flat_map(|(u, _)| u.lines()));
            }
            deps.error_ratios.commit(
                &job.id,
                judge.outcomes(),
                deps.settings.sync.error_ratio_window,
            );
            if !done.retry_lines.is_empty() {
                done.retry_at_ms = Some(crate::store::now_ms() + retry_backoff_ms(claim.attempts));
            }
            // Joiners awaiting their account: the chunk is run again, by any replica, when the
            // first of their next lookups is due (or sooner, for a retry).
            if let Some(next) = done.await_next_ms {
                done.retry_at_ms = Some(done.retry_at_ms.map_or(next, |t| t.min(next)));
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
            record(done, results, events, changed, desired, drifted, audit);
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
        // A cancel settles the user: nothing was written for them.
        UserResult::AwaitUser { .. } | UserResult::Scheduled { .. }
            if matches!(run.stopped(), Some(Stop::Cancelled)) =>
        {
            unsettled.push((user, sent))
        }
        UserResult::Scheduled { lines, at_ms } => {
            done.held_lines.extend(lines);
            done.await_next_ms = Some(done.await_next_ms.map_or(at_ms, |t| t.min(at_ms)));
        }
        UserResult::AwaitUser {
            lines,
            since_ms,
            next_at_ms,
        } => {
            done.await_lines
                .extend(lines.into_iter().map(|line| (line, since_ms)));
            done.await_next_ms = Some(done.await_next_ms.map_or(next_at_ms, |t| t.min(next_at_ms)));
        }
        UserResult::Skipped => unsettled.push((user, sent)),
        // Only produced by `sync_user` for the Authorization path and taken out before.
        UserResult::Deferred { .. } => unsettled.push((user, sent)),
    }
}

/// Adds a user's final result (the fields of `UserResult::Rows`) to a chunk's outcomes: rows,
/// events, whether it changed, its desired state, drift, and its audit line.
fn record(
    done: &mut ChunkDone,
    results: Vec<RowResult>,
    events: Vec<OutboxEvent>,
    changed: Option<bool>,
    desired: Option<Box<DesiredUpdate>>,
    drifted: bool,
    audit: Vec<AuditLine>,
) {
    done.audit.extend(audit);
    done.desired.extend(desired.map(|d| *d));
    done.drifted += u64::from(drifted);
    match changed {
        Some(true) => done.deltas.users_changed += 1,
        Some(false) => done.deltas.users_unchanged += 1,
        None => {}
    }
    done.results.extend(results);
    done.events.extend(events);
}
