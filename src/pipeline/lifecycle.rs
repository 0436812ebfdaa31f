//! How a job ends: finished (nothing left to sync), failed (the target refused rolesync
//! itself) or cancelled (by a caller). Every end goes through here, so each one does the same
//! three things:
//!
//! 1. the status transition, with the `job.finished` event in the same store transaction (the
//!    event is never lost nor sent for a transition that did not happen);
//! 2. `jobs_total{status}`, counted only by the call whose transition happened, so a job is
//!    counted once however many tasks race to end it;
//! 3. this process forgets the job (pinned policy, directory snapshot, error-ratio window) and
//!    wakes the dispatcher so the event leaves now rather than at its next poll.

use super::Deps;
use crate::audit::events::JobFinished;
use crate::domain::{EventType, JobStatus};
use crate::store::{JobRecord, OutboxEvent, StoreResult};
use std::time::Duration;

/// Attempts of `finish_if_done` before it leaves the job to the idle sweep.
const FINISH_ATTEMPTS: u64 = 5;

/// Moves a job with nothing left to sync to its final status (`succeeded`, `partial`, …, as the
/// store judges it from the rows). Does nothing while rows are pending or if another task
/// finished the job first.
pub(crate) async fn finish_if_done(deps: &Deps, job_id: &str) {
    // After the last chunk nothing else would call this again: a passing store error (busy,
    // pool timeout) is retried here, a few times, rather than leaving the job running. The
    // sweep of the claimer (`jobs_to_finish`) catches the rest.
    let mut attempt = 0u64;
    let finished = loop {
        attempt += 1;
        let r = deps
            .store
            .finish_job_if_done(job_id, |job: &JobRecord| {
                job_finished_event(deps, job, job.status)
            })
            .await;
        match r {
            Err(_) if attempt < FINISH_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await
            }
            r => break r,
        }
    };
    match finished {
        Ok(Some(job)) => {
            tracing::info!(job.id = %job.id, job.status = job.status.as_str(), scim.requests = job.scim_requests, "job finished");
            ended(deps, &job.id, job.status);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(job.id = %job_id, error = %e, "cannot finish the job after {FINISH_ATTEMPTS} attempts; the idle sweep finishes it later")
        }
    }
}

/// Fails a job whose every row would fail the same way (the target refuses rolesync's
/// credentials): its pending rows become `failed` with `reason`.
pub(crate) async fn fail(deps: &Deps, job_id: &str, reason: &str) {
    // The event carries the job as read just before the transition, with the status it moves to.
    let events = match deps.store.get_job(job_id).await {
        Ok(Some(job)) => job_finished_event(deps, &job, JobStatus::Failed),
        _ => Vec::new(),
    };
    match deps.store.fail_job(job_id, reason, &events).await {
        Ok(true) => {
            tracing::error!(job.id = %job_id, reason = %reason, "job failed");
            ended(deps, job_id, JobStatus::Failed);
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job.id = %job_id, error = %e, "cannot fail the job"),
    }
}

/// Cancels `job` (read by the caller, not terminal): rows not yet written become `cancelled`.
/// Returns whether this call made the transition (false: the job ended meanwhile). `by` names
/// who asked, for the log.
pub(crate) async fn cancel(deps: &Deps, job: &JobRecord, by: &str) -> StoreResult<bool> {
    let events = job_finished_event(deps, job, JobStatus::Cancelled);
    let cancelled = deps.store.cancel_job(&job.id, &events).await?;
    if cancelled {
        tracing::info!(job.id = %job.id, key = %by, "job cancelled");
        ended(deps, &job.id, JobStatus::Cancelled);
    }
    Ok(cancelled)
}

fn job_finished_event(deps: &Deps, job: &JobRecord, status: JobStatus) -> Vec<OutboxEvent> {
    deps.events
        .event(EventType::JobFinished, JobFinished::new(job, status))
        .into_iter()
        .collect()
}

/// After a transition made by this process: counts it and lets go of the job.
fn ended(deps: &Deps, job_id: &str, status: JobStatus) {
    deps.metrics
        .jobs_total
        .with_label_values(&[status.as_str()])
        .inc();
    deps.unpin_policy(job_id);
    deps.reads.drop_job(job_id);
    deps.error_ratios.forget(job_id);
    deps.wake_dispatcher.notify_one();
}
