//! The sync pipeline: tokio tasks joined by bounded `mpsc` channels.
//!
//! ```text
//! intake ─► validate ─► plan ══store══► claim ─► sync workers ─► results
//! (claims    (rows vs     (chunks,        (leases   (per user:       (commit outcomes;
//!  jobs)      policy,      reads,          chunks)   find, decide,    end finished
//!             grouped      estimate,                 PATCH)           jobs)
//!             per user)    approval)
//! ```
//!
//! Planning and syncing meet in the store, not in memory: a plan is committed as chunks, and
//! chunks are claimed with leases. That is what makes a job survive a crash (an unfinished plan
//! or an expired chunk lease is claimed again) and lets several replicas share one job.
//! Each stage exits when its input channel closes; the sources (`intake`, `claim`) stop on
//! shutdown, so the stages drain in order.
//!
//! Validation, planning and syncing group rows per user the same way (`users`); what to do with
//! a user is a pure function of what the target holds (`decide`); how a job ends, from any stage
//! or from `POST /v1/jobs/{id}/cancel`, is `lifecycle`.

mod bulk;
mod circuit;
mod decide;
pub(crate) mod drift;
pub(crate) mod fence;
mod intake;
pub(crate) mod lifecycle;
mod live;
mod org_roles;
mod plan;
pub(crate) mod reads;
mod results;
mod schedule;
pub(crate) mod stops;
mod supervisor;
mod sync;
mod users;
mod validate;

pub use circuit::Circuit;
pub use drift::ChangedBy;
pub(crate) use validate::judge_stored;

use crate::audit::EventFactory;
use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::policy::live::LivePolicy;
use crate::scim::ScimClient;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every stage may use.
#[derive(Clone)]
pub(crate) struct Deps {
    pub(crate) store: Store,
    pub(crate) policy: Arc<LivePolicy>,
    pub(crate) scim: Arc<ScimClient>,
    pub(crate) metrics: Metrics,
    pub(crate) events: EventFactory,
    pub(crate) settings: Arc<Settings>,
    /// This process's identity in leases.
    pub(crate) owner: String,
    pub(crate) wake_planner: Arc<Notify>,
    pub(crate) wake_claimer: Arc<Notify>,
    pub(crate) wake_dispatcher: Arc<Notify>,
    pub(crate) circuit: Arc<Circuit>,
    /// The policy each job was planned under: a reload does not change a running job. After a
    /// restart, a resumed job uses the policy in force.
    pub(crate) job_policies:
        Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<crate::policy::Policy>>>>,
    /// The target's page size and the last org size (see `reads`).
    pub(crate) reads: Arc<reads::Reads>,
    /// The chunk runs in progress, so that a target-wide failure stops a job's other chunks.
    pub(crate) chunk_runs: Arc<stops::ChunkRuns>,
    /// The chunks and plans this process is working on now: the only leases it renews.
    pub(crate) live: Arc<live::LiveWork>,
    /// Whether the stages run, and how often they were restarted (`/healthz`).
    pub(crate) health: Arc<supervisor::PipelineHealth>,
    /// Each job's latest user outcomes and `error_ratio` pauses.
    pub(crate) error_ratios: Arc<stops::ErrorRatios>,
    /// When planning last failed to read the org's role catalog (`org_roles`).
    pub(crate) org_roles: Arc<org_roles::OrgRolesCheck>,
}

impl Deps {
    /// The policy `job_id` was planned under, else the one in force.
    pub(crate) fn policy_for(&self, job_id: &str) -> Arc<crate::policy::Policy> {
        match self.job_policies.lock() {
            Ok(m) => m
                .get(job_id)
                .cloned()
                .unwrap_or_else(|| self.policy.current()),
            Err(_) => self.policy.current(),
        }
    }

    pub(crate) fn pin_policy(&self, job_id: &str, policy: Arc<crate::policy::Policy>) {
        if let Ok(mut m) = self.job_policies.lock() {
            m.insert(job_id.to_owned(), policy);
        }
    }

    pub(crate) fn unpin_policy(&self, job_id: &str) {
        if let Ok(mut m) = self.job_policies.lock() {
            m.remove(job_id);
        }
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        self.settings.store.lease_secs as i64 * 1000
    }
}

/// Handles on the running pipeline.
pub struct Pipeline {
    /// The stages: they finish by themselves once the sources stop.
    tracker: TaskTracker,
    /// Heartbeat and probe: they run until everything is stopped.
    background: TaskTracker,
    /// Stops the sources (job intake and chunk claims); everything downstream drains.
    stop_sources: CancellationToken,
    /// Stops everything, including work in flight.
    stop_all: CancellationToken,
    deps: Deps,
}

/// Channel capacities: small, because each message is a whole job or a chunk.
const JOBS_IN_FLIGHT: usize = 2;

impl Pipeline {
    pub(crate) fn spawn(deps: Deps) -> Pipeline {
        let tracker = TaskTracker::new();
        let stop_sources = CancellationToken::new();
        let stop_all = CancellationToken::new();
        tracker.spawn(supervisor::run(
            deps.clone(),
            stop_sources.clone(),
            stop_all.clone(),
        ));
        tracker.close();
        let background = TaskTracker::new();
        background.spawn(heartbeat(deps.clone(), stop_all.clone()));
        background.spawn(circuit::probe(deps.clone(), stop_all.clone()));
        // Checked at start-up: an invalid schedule never gets this far.
        if let Ok(Some(cron)) = deps.settings.reconcile.cron() {
            background.spawn(schedule::run(deps.clone(), cron, stop_all.clone()));
        }
        if deps.settings.drift.source == crate::domain::DriftSource::Audit {
            background.spawn(drift::run(deps.clone(), stop_all.clone()));
        }
        background.close();
        Pipeline {
            tracker,
            background,
            stop_sources,
            stop_all,
            deps,
        }
    }

    pub(crate) fn deps(&self) -> &Deps {
        &self.deps
    }

    /// Whether the stages run (`/healthz`).
    pub(crate) fn health(&self) -> &supervisor::PipelineHealth {
        &self.deps.health
    }

    /// A new job was stored: plan it now rather than at the next poll.
    pub(crate) fn job_submitted(&self) {
        self.deps.wake_planner.notify_one();
    }

    /// Graceful stop: no new work is claimed; work in flight may finish within `grace`, then
    /// whatever is still leased is released so another replica (or the next start) resumes it.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.stop_sources.cancel();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "work still in flight at the end of the grace period; releasing it"
            );
            self.stop_all.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
        self.stop_all.cancel();
        self.background.wait().await;
        if let Err(e) = self.deps.store.release_leases(&self.deps.owner).await {
            tracing::warn!(error = %e, "cannot release leases; they expire by themselves");
        }
    }
}

/// The stages, joined by their channels, each named for the supervisor. They end by themselves
/// once the sources stop (`stop_sources`); workers also on `stop_all`.
fn stages(
    deps: &Deps,
    stop_sources: &CancellationToken,
    stop_all: &CancellationToken,
) -> Vec<(&'static str, futures::future::BoxFuture<'static, ()>)> {
    use futures::FutureExt;
    let (to_validate, validate_rx) = mpsc::channel(JOBS_IN_FLIGHT);
    let (to_plan, plan_rx) = mpsc::channel(JOBS_IN_FLIGHT);
    let workers = deps.settings.target.max_concurrency.clamp(1, 4);
    let (to_workers, workers_rx) = mpsc::channel(workers);
    let (to_results, results_rx) = mpsc::channel(workers * 2);
    let workers_rx = Arc::new(tokio::sync::Mutex::new(workers_rx));
    let mut out: Vec<(&'static str, futures::future::BoxFuture<'static, ()>)> = vec![
        (
            "intake",
            intake::run(deps.clone(), to_validate, stop_sources.clone()).boxed(),
        ),
        (
            "validate",
            validate::run(deps.clone(), validate_rx, to_plan).boxed(),
        ),
        ("plan", plan::run(deps.clone(), plan_rx).boxed()),
        (
            "claim",
            sync::claim(deps.clone(), to_workers, stop_sources.clone()).boxed(),
        ),
    ];
    for _ in 0..workers {
        out.push((
            "worker",
            sync::worker(
                deps.clone(),
                workers_rx.clone(),
                to_results.clone(),
                stop_all.clone(),
            )
            .boxed(),
        ));
    }
    drop(to_results);
    out.push(("results", results::run(deps.clone(), results_rx).boxed()));
    out
}

/// Keeps alive the leases of the work this process is doing now (`live`), and only those.
/// Each renewal moves the send window of the chunk's run (`fence`); a chunk found taken over
/// stops its run at once, so it sends nothing more.
async fn heartbeat(deps: Deps, stop: CancellationToken) {
    let every = Duration::from_millis((deps.lease_ms() / 3).max(1000) as u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (chunks, plans) = deps.live.snapshot();
        if chunks.is_empty() && plans.is_empty() {
            continue;
        }
        let confirmed = tokio::time::Instant::now();
        match deps
            .store
            .renew_leases(&deps.owner, &chunks, &plans, deps.lease_ms())
            .await
        {
            Ok(renewal) => {
                let window = fence::window(confirmed, deps.lease_ms());
                for held in &renewal.held {
                    deps.chunk_runs.lease_renewed(held, window);
                }
                for held in &renewal.lost {
                    // Said once per run: the run is stopped now and its guard goes with it.
                    if deps.chunk_runs.lease_lost(held) {
                        let (job_id, chunk_no, fence) = held;
                        tracing::warn!(job.id = %job_id, chunk = chunk_no, fence, "chunk lease lost to another worker: its run here sends nothing more");
                    }
                }
                // A job cancelled (or failed) through another replica: its runs here stop
                // sending within one heartbeat.
                lifecycle::stop_runs_of_ended_jobs(&deps, &renewal.stopped_jobs).await;
            }
            // The runs' send windows are not moved: a run that cannot renew stops sending on
            // its own when its window ends (`fence`).
            Err(e) => tracing::warn!(error = %e, "cannot renew leases"),
        }
    }
}

/// Gauge of messages waiting in a channel.
fn record_depth<T>(metrics: &Metrics, stage: &str, tx: &mpsc::Sender<T>) {
    let depth = tx.max_capacity() - tx.capacity();
    metrics
        .pipeline_queue_depth
        .with_label_values(&[stage])
        .set(depth as i64);
}
