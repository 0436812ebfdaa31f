//! How a job ends: finished (nothing left to sync), failed (the target refused rolesync
//! itself) or cancelled (by a caller). Every end goes through here, so each one does the same
//! three things:
//!
//! 1. the status transition, with the `job.finished` event in the same store transaction, built
//!    from the job as the transition left it (final status, final counts): the event is never
//!    lost, never sent for a transition that did not happen, and never disagrees with the job;
//! 2. `jobs_total{status}`, counted only by the call whose transition happened, so a job is
//!    counted once however many tasks race to end it;
//! 3. this process forgets the job (pinned policy, error-ratio window, chunk stops), deletes its
//!    directory scan from the store, and wakes the dispatcher so the event leaves now rather
//!    than at its next poll.
//!
//! A cancel ends a job in two steps when chunks of it are being run: `cancel` makes it
//! `cancelled` at once and stops its runs in this process (`Stop::Cancelled`); each run then
//! records what it wrote and cancels the rest, and the last one to settle finishes the job
//! (`finish_if_done`: `finished_at`, `job.finished`, the metric). Other replicas learn it at
//! their next lease renewal (`stop_runs_of_ended_jobs`).

use super::Deps;
use super::stops::Stop;
use crate::audit::events::JobFinished;
use crate::domain::{EventType, JobStatus};
use crate::store::{JobRecord, OutboxEvent, StoreResult};
use std::time::Duration;

/// Attempts of `finish_if_done` before it leaves the job to the idle sweep.
const FINISH_ATTEMPTS: u64 = 5;

/// Moves a job with nothing left to sync to its final status (`succeeded`, `partial`, …, as the
/// store judges it from the rows; a cancelled one stays `cancelled` and gets its
/// `finished_at`). Does nothing while rows are pending or if another task finished the job
/// first.
pub(crate) async fn finish_if_done(deps: &Deps, job_id: &str) {
    // After the last chunk nothing else would call this again: a passing store error (busy,
    // pool timeout) is retried here, a few times, rather than leaving the job running. The
    // sweep of the claimer (`jobs_to_finish`) catches the rest.
    let mut attempt = 0u64;
    let finished = loop {
        attempt += 1;
        let r = deps
            .store
            .finish_job_if_done(job_id, |job: &JobRecord| job_finished_event(deps, job))
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
    let failed = deps
        .store
        .fail_job(job_id, reason, |job: &JobRecord| {
            job_finished_event(deps, job)
        })
        .await;
    match failed {
        Ok(true) => {
            tracing::error!(job.id = %job_id, reason = %reason, "job failed");
            ended(deps, job_id, JobStatus::Failed);
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job.id = %job_id, error = %e, "cannot fail the job"),
    }
}

/// Cancels a job that has not ended (`Store::cancel_job`): rows no write was sent for become
/// `cancelled` now; chunks being run keep their rows until the run records them. Then, before
/// the caller answers, every run of the job in this process is stopped: no call of theirs that
/// is still queued is sent, no user starts; a call already sent completes and is recorded.
/// Returns the job as the cancel left it (`finished_at` set if it is final already), or None if
/// it had ended meanwhile. `by` names who asked, for the log.
pub(crate) async fn cancel(
    deps: &Deps,
    job_id: &str,
    by: &crate::domain::Principal,
) -> StoreResult<Option<JobRecord>> {
    let cancelled = deps
        .store
        .cancel_job(job_id, by, |job: &JobRecord| job_finished_event(deps, job))
        .await?;
    let Some(job) = cancelled else {
        return Ok(None);
    };
    // After the commit, not before: a run stopped by a cancel commits what it did and cancels
    // its other rows, which must only happen to a job that is cancelled.
    deps.chunk_runs.stop_job(job_id, &Stop::Cancelled);
    tracing::info!(
        target: "audit",
        {
            job.id = %job_id,
            actor = %by.label(),
            rows.pending = job.counts.pending,
        },
        "job cancelled"
    );
    if job.finished_at_ms.is_some() {
        ended(deps, job_id, JobStatus::Cancelled);
    } else {
        // Open chunks of a dead owner or kept for their intents are settled by a claim.
        deps.wake_claimer.notify_one();
    }
    Ok(Some(job))
}

/// For the lease heartbeat: `jobs` had chunk runs in this process and are no longer running
/// (`Store::renew_leases`, `stopped_jobs`). The runs of a job cancelled elsewhere stop as a
/// cancel here stops them (`Stop::Cancelled`: they record what they wrote, cancel the rest and
/// finish the job if they are its last); the runs of a job that ended otherwise (failed,
/// finished by another replica) stop without committing (`Stop::JobEnded`). A paused job has
/// not ended: its runs are left alone.
pub(crate) async fn stop_runs_of_ended_jobs(deps: &Deps, jobs: &[String]) {
    for job_id in jobs {
        let status = match deps.store.get_job(job_id).await {
            Ok(Some(job)) => job.status,
            // Pruned: nothing of it may be committed anyway.
            Ok(None) => JobStatus::Failed,
            Err(e) => {
                tracing::warn!(job.id = %job_id, error = %e, "cannot read a job whose runs may have to stop; the next heartbeat tries again");
                continue;
            }
        };
        let why = match status {
            JobStatus::Cancelled => Stop::Cancelled,
            s if s.is_terminal() => Stop::JobEnded(s),
            _ => continue,
        };
        tracing::info!(job.id = %job_id, job.status = status.as_str(), "the job ended elsewhere: stopping its runs here");
        deps.chunk_runs.stop_job(job_id, &why);
    }
}

fn job_finished_event(deps: &Deps, job: &JobRecord) -> Vec<OutboxEvent> {
    deps.events
        .event_as(
            EventType::JobFinished,
            JobFinished::new(job),
            job.submitted_by.as_ref(),
        )
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
    // The job's directory scan is no longer read. Off this path: deleting a million-user
    // scan takes a while, and retention deletes any the job's end did not get to.
    let (store, id) = (deps.store.clone(), job_id.to_owned());
    tokio::spawn(async move {
        if let Err(e) = store.drop_scan(&id).await {
            tracing::warn!(error = %e, job.id = %id, "cannot delete the job's directory scan; retention will");
        }
    });
    deps.error_ratios.forget(job_id);
    deps.chunk_runs.forget(job_id);
    deps.wake_dispatcher.notify_one();
}
