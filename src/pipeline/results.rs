//! Stage 4: commits each chunk's outcomes (rows, counters, audit events) in one transaction,
//! finishes jobs whose last chunk is done, and turns a chunk that stopped early into a paused
//! or failed job. Each chunk's outcome is settled inside the chunk's span, so every line here
//! carries `job.id`, `chunk` and `attempt`.

use super::circuit::paused_reason;
use super::stops::Stop;
use super::sync::ChunkOutcome;
use super::{Deps, lifecycle};
use crate::domain::PausedReason;
use crate::scim::ScimError;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

pub(crate) async fn run(deps: Deps, mut rx: mpsc::Receiver<(ChunkOutcome, tracing::Span)>) {
    while let Some((outcome, chunk)) = rx.recv().await {
        // Inside the chunk's span: the commit's lines carry `job.id`, `chunk` and `attempt`.
        settle(&deps, outcome).instrument(chunk).await;
    }
}

async fn settle(deps: &Deps, outcome: ChunkOutcome) {
    match outcome {
        ChunkOutcome::Done(claim, done) => {
            let results: Vec<_> = done.results.iter().map(|r| r.outcome).collect();
            match commit(deps, &claim, &done).await {
                Ok(true) => {
                    // Logged from what is committed, once (`audit::log`).
                    for line in &done.audit {
                        line.committed();
                    }
                    count_conflicts(deps, &done.events);
                    deps.metrics
                        .reconcile_drifted_users_total
                        .inc_by(done.drifted);
                    for o in results {
                        deps.metrics
                            .assignments_total
                            .with_label_values(&[o.as_str()])
                            .inc();
                    }
                    deps.wake_dispatcher.notify_one();
                    lifecycle::finish_if_done(deps, &claim.job_id).await;
                }
                Ok(false) => {
                    tracing::warn!("chunk lease lost before commit; its new owner re-runs it");
                    for line in &done.audit {
                        line.not_recorded("the chunk's lease was lost before its commit");
                    }
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "cannot commit a chunk; it is re-run when its lease expires"
                    );
                    for line in &done.audit {
                        line.not_recorded("the chunk's commit failed");
                    }
                }
            }
        }
        ChunkOutcome::Release(claim, deltas, stop, written) => {
            let why = format!("the chunk's run stopped before its commit: {stop}");
            for line in &written {
                line.not_recorded(&why);
            }
            if let Err(e) = deps.store.add_job_deltas(&claim.job_id, &deltas).await {
                tracing::warn!(error = %e, "cannot record calls spent");
            }
            match &stop {
                Stop::Target(
                    error @ (ScimError::Forbidden { .. } | ScimError::AuthFailed { .. }),
                ) => {
                    // Every row would fail the same way: fail the job once, with the reason.
                    let reason = format!("auth_failed: {error}");
                    lifecycle::fail(deps, &claim.job_id, &reason).await;
                }
                Stop::ErrorRatio { failed, sample } => {
                    // The target answers but refuses most users: the chunk's rows stay
                    // pending, and the job waits out a cool-down rather than failing them.
                    pause(deps, &claim.job_id, PausedReason::ErrorRatio).await;
                    // One pause per opening of the circuit: the job's other chunks stopped
                    // with it do not count again. (This stage is one task: no race between
                    // the look-ahead and the count.)
                    let sync = &deps.settings.sync;
                    let cool_down = deps.error_ratios.next_cool_down(&claim.job_id, sync);
                    if deps.circuit.open_for(PausedReason::ErrorRatio, cool_down) {
                        let pauses = deps.error_ratios.count_pause(&claim.job_id);
                        tracing::warn!(
                            failed,
                            sample,
                            pauses,
                            max_pauses = sync.error_ratio_max_pauses,
                            cool_down_secs = cool_down.as_secs(),
                            "most of the job's latest users were refused by the target: pausing"
                        );
                    }
                    release(deps, &claim).await;
                }
                Stop::CircuitOpen(reason) => {
                    pause(deps, &claim.job_id, *reason).await;
                    // Open again in case the circuit closed since the chunk saw it open:
                    // the job must not stay paused with nothing to resume it.
                    deps.circuit.open(*reason);
                    release(deps, &claim).await;
                }
                // A cancelled run is committed by `sync`, never released; were one
                // released, its chunk goes back `ready`, where the next claim settles it. A
                // job that ended elsewhere has its chunks `done` already: the release finds
                // nothing of this owner's to give back.
                Stop::Cancelled | Stop::JobEnded(_) => release(deps, &claim).await,
                // Given back under its fence: a no-op when another worker holds the chunk
                // now; when nobody does (a store cut), it is claimable at once.
                Stop::LeaseLost => release(deps, &claim).await,
                Stop::Target(error) => {
                    let reason = paused_reason(error);
                    // Paused before the circuit opens, so that the resume cannot run
                    // between the two and miss this job.
                    pause(deps, &claim.job_id, reason).await;
                    deps.circuit.open(reason);
                    release(deps, &claim).await;
                }
            }
            deps.chunk_runs.settle(&claim.job_id);
        }
    }
}

/// Commits a chunk, retrying a failure that passes (a store restarting, a lost connection) for
/// about half a lease: the writes were made, and committing them now is cheaper than running
/// the chunk again once its lease runs out.
async fn commit(
    deps: &Deps,
    claim: &crate::store::ChunkClaim,
    done: &crate::store::ChunkDone,
) -> crate::store::StoreResult<bool> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(deps.lease_ms().max(2) as u64 / 2);
    let mut wait = Duration::from_millis(200);
    loop {
        match deps.store.complete_chunk(claim, &deps.owner, done).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "cannot commit the chunk yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            r => return r,
        }
    }
}

/// Counts the conflicts a committed chunk raised (`role_sync.conflict_detected`), by reason.
fn count_conflicts(deps: &Deps, events: &[crate::store::OutboxEvent]) {
    let conflict = crate::domain::EventType::ConflictDetected.as_str();
    for e in events.iter().filter(|e| e.event_type == conflict) {
        let reason = serde_json::from_str::<serde_json::Value>(&e.payload)
            .ok()
            .and_then(|v| v["data"]["reason"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Ok(c) = deps
            .metrics
            .conflicts_after_write_total
            .get_metric_with_label_values(&[&reason])
        {
            c.inc();
        }
    }
}

async fn pause(deps: &Deps, job_id: &str, reason: PausedReason) {
    if let Err(e) = deps.store.set_paused(job_id, Some(reason)).await {
        tracing::warn!(error = %e, "cannot mark the job paused");
    }
}

/// Gives the chunk back for a pause of the target: the run does not count towards the chunk's
/// attempts (an outage must not exhaust them).
async fn release(deps: &Deps, claim: &crate::store::ChunkClaim) {
    if let Err(e) = deps
        .store
        .release_chunk(claim, &deps.owner, None, false)
        .await
    {
        tracing::warn!(error = %e, "cannot release the chunk; its lease expires");
    }
}
