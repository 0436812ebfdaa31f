//! Stage 3: cuts the users into chunks of `sync.chunk_size`, estimates the calls the job will
//! spend, and commits the plan (rejected rows, chunks, status) in one transaction. From here
//! the chunks live in the store, where any worker of any replica may claim them.

use super::Deps;
use super::resolve::Resolved;
use crate::audit::events::{JOB_FINISHED, ROLE_SYNC_REJECTED, rejected_data};
use crate::domain::{JobStatus, Outcome};
use crate::store::{JobPlan, JobRecord, OutboxEvent};
use serde_json::json;
use tokio::sync::mpsc;

pub async fn run(deps: Deps, mut rx: mpsc::Receiver<Resolved>) {
    while let Some(r) = rx.recv().await {
        let job_id = r.job.id.clone();
        let plan = build_plan(&deps, &r);
        let rejected = plan.rejected.len() as u64;
        match deps.store.save_plan(&job_id, &deps.owner, &plan).await {
            Ok(true) => {
                deps.pin_policy(&job_id, r.policy.clone());
                deps.metrics
                    .assignments_total
                    .with_label_values(&[Outcome::Rejected.as_str()])
                    .inc_by(rejected);
                tracing::info!(
                    job.id = %job_id,
                    users = plan.users_total,
                    chunks = plan.chunks.len(),
                    rejected,
                    "job planned"
                );
                finish_if_done(&deps, &job_id).await;
                deps.wake_claimer.notify_waiters();
                deps.wake_dispatcher.notify_one();
            }
            Ok(false) => {
                tracing::warn!(job.id = %job_id, "lost the planning lease; another planner has the job")
            }
            Err(e) => {
                tracing::error!(job.id = %job_id, error = %e, "cannot save the job's plan; it will be planned again")
            }
        }
    }
}

fn build_plan(deps: &Deps, r: &Resolved) -> JobPlan {
    let chunk_size = deps.settings.sync.chunk_size;
    let mut chunks: Vec<Vec<i64>> = Vec::new();
    for users in r.users.chunks(chunk_size) {
        chunks.push(
            users
                .iter()
                .flat_map(|u| u.rows.lines.iter().copied())
                .collect(),
        );
    }
    let users = r.users.len() as i64;
    // Per-user lookups: one read per user, at most one write per user.
    let reads = users;
    let writes_max = if r.job.dry_run { 0 } else { users };
    let interval = deps.scim.call_interval().as_secs_f64();
    let estimate = json!({
        "strategy": "lookup",
        "reads": reads,
        "writes_max": writes_max,
        "eta_secs": ((reads + writes_max) as f64 * interval).ceil() as i64,
        "requests_per_minute": deps.settings.target.requests_per_minute,
    });
    let events: Vec<OutboxEvent> = r
        .rejected
        .iter()
        .filter_map(|row| {
            let (code, message) = row.reason.as_ref()?;
            let a = r.rejected_rows.get(&row.line);
            deps.events.event(
                ROLE_SYNC_REJECTED,
                rejected_data(
                    &r.job.id,
                    row.line,
                    a.map(|a| {
                        (
                            a.external_id.as_str(),
                            a.role_template.as_str(),
                            a.license_tier.as_str(),
                        )
                    }),
                    code.as_str(),
                    message,
                ),
            )
        })
        .collect();
    JobPlan {
        status: JobStatus::Running,
        rejected: r.rejected.clone(),
        chunks,
        users_total: users,
        estimate: Some(estimate.to_string()),
        approval: None,
        events,
    }
}

/// Moves a job with nothing left to sync to its final status and counts it.
pub async fn finish_if_done(deps: &Deps, job_id: &str) {
    let events = deps.events.clone();
    // After the last chunk nothing else would call this again: a passing store error (busy,
    // pool timeout) is retried here, a few times, rather than leaving the job running.
    let mut attempt = 0u64;
    let finished = loop {
        attempt += 1;
        let r = deps
            .store
            .finish_job_if_done(job_id, |job: &JobRecord| {
                events
                    .event(JOB_FINISHED, job_finished_data(job))
                    .into_iter()
                    .collect()
            })
            .await;
        match r {
            Err(_) if attempt < 5 => {
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await
            }
            r => break r,
        }
    };
    match finished {
        Ok(Some(job)) => {
            deps.unpin_policy(&job.id);
            deps.metrics
                .jobs_total
                .with_label_values(&[job.status.as_str()])
                .inc();
            tracing::info!(job.id = %job.id, job.status = job.status.as_str(), scim.requests = job.scim_requests, "job finished");
            deps.wake_dispatcher.notify_one();
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(job.id = %job_id, error = %e, "cannot finish the job after 5 attempts; it stays running with every row done")
        }
    }
}

pub fn job_finished_data(job: &JobRecord) -> serde_json::Value {
    json!({
        "job_id": job.id,
        "status": job.status.as_str(),
        "counts": job.counts,
        "users": {"total": job.users_total, "changed": job.users_changed, "unchanged": job.users_unchanged},
        "scim": {"requests": job.scim_requests, "retries": job.scim_retries, "rate_limited": job.scim_rate_limited},
    })
}
