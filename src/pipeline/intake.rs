//! Source of the planning stages: claims jobs that need a plan (new ones, or ones whose planner
//! died) and hands them to `validate`. Stops on shutdown, which closes the chain behind it.

use super::{Deps, record_depth};
use crate::policy::Policy;
use crate::store::{ANALYZE_JOB_ROWS, Analyzed, JobRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A job on its way through planning, with the policy it is planned under.
pub(crate) struct PlanJob {
    pub(crate) job: JobRecord,
    pub(crate) policy: Arc<Policy>,
    /// `plan`: the whole planning of the job, from its claim to its last page; the stages run
    /// each page inside it, so their lines carry `job.id`. It ends when its last handle drops.
    pub(crate) span: tracing::Span,
}

pub(crate) async fn run(deps: Deps, tx: mpsc::Sender<PlanJob>, stop: CancellationToken) {
    loop {
        let claimed = match deps
            .store
            .claim_job_to_plan(&deps.owner, deps.lease_ms())
            .await
        {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a job to plan");
                None
            }
        };
        match claimed {
            Some(job) => {
                if job.counts.total >= ANALYZE_JOB_ROWS {
                    // Before the planning's first query over the job's rows (see
                    // `refresh_statistics`). A failure only costs speed.
                    if let Err(e) = deps.store.refresh_statistics(Analyzed::Items).await {
                        tracing::warn!(error = %e, "cannot refresh the statistics of items");
                    }
                }
                let span = tracing::info_span!("plan", job.id = %job.id, rows = job.counts.total);
                // A child of the request that submitted the job, when traces were on then.
                crate::telemetry::set_parent(&span, job.traceparent.as_deref());
                span.in_scope(|| tracing::info!("planning job"));
                let msg = PlanJob {
                    job,
                    policy: deps.policy.current(),
                    span,
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    sent = tx.send(msg) => if sent.is_err() { return },
                }
                record_depth(&deps.metrics, "validate", &tx);
            }
            None => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = deps.wake_planner.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
