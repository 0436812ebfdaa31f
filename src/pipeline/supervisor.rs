//! Keeps the pipeline running. The stages are spawned as one set; in normal operation none of
//! them ends until shutdown (each exits only when its input closes, and the sources only on
//! `stop_sources`). So a stage that ends early, by panicking or returning, is a fault: the
//! supervisor counts it (`rolesync_pipeline_restarts_total{stage}`), stops the rest of the set,
//! and starts a fresh one after a backoff (1 s, doubling to 60 s; reset after 5 minutes of
//! calm). Nothing is lost on the way: work lives in the store, and leases of the dead set's
//! work are no longer renewed (`live`), so it is claimed again.
//!
//! `/healthz` fails while the pipeline cannot run: no set running, or more than
//! `MAX_RESTARTS_IN_WINDOW` restarts within `WINDOW` (a crash loop), so an orchestrator
//! restarts the process.

use super::{Deps, stages};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const WINDOW: Duration = Duration::from_secs(300);
const MAX_RESTARTS_IN_WINDOW: usize = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What `/healthz` reads.
#[derive(Default)]
pub struct PipelineHealth {
    running: AtomicBool,
    restarts: Mutex<VecDeque<Instant>>,
}

impl PipelineHealth {
    /// None when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        if !self.running.load(Ordering::Relaxed) {
            return Some("the sync pipeline is not running".into());
        }
        let recent = self.recent_restarts();
        (recent > MAX_RESTARTS_IN_WINDOW).then(|| {
            format!(
                "the sync pipeline restarted {recent} times in the last {} s",
                WINDOW.as_secs()
            )
        })
    }

    fn recent_restarts(&self) -> usize {
        let mut r = self
            .restarts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while r.front().is_some_and(|t| t.elapsed() > WINDOW) {
            r.pop_front();
        }
        r.len()
    }

    fn restarted(&self) {
        let mut r = self
            .restarts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.push_back(Instant::now());
        // Bounded: only the window's entries matter.
        while r.len() > MAX_RESTARTS_IN_WINDOW * 4 {
            r.pop_front();
        }
    }
}

pub(super) async fn run(deps: Deps, stop_sources: CancellationToken, stop_all: CancellationToken) {
    let (health, metrics) = (deps.health.clone(), deps.metrics.clone());
    let (s, a) = (stop_sources.clone(), stop_all.clone());
    supervise(
        &health,
        &metrics,
        &stop_sources,
        &stop_all,
        FIRST_BACKOFF,
        || stages(&deps, &s, &a),
    )
    .await;
}

/// A named stage future.
pub(super) type Stage = (&'static str, futures::future::BoxFuture<'static, ()>);

/// Runs the sets `make` builds, one at a time, until a stop token is cancelled.
async fn supervise(
    health: &PipelineHealth,
    metrics: &crate::metrics::Metrics,
    stop_sources: &CancellationToken,
    stop_all: &CancellationToken,
    first_backoff: Duration,
    mut make: impl FnMut() -> Vec<Stage>,
) {
    let mut backoff = first_backoff;
    loop {
        let mut set = JoinSet::new();
        let mut names = std::collections::HashMap::new();
        for (name, fut) in make() {
            // The stage's counter exists from its start (at 0), so that `increase()` sees the
            // first restart and the series is there for dashboards before any fault.
            metrics.pipeline_restarts_total.with_label_values(&[name]);
            let handle = set.spawn(fut);
            names.insert(handle.id(), name);
        }
        health.running.store(true, Ordering::Relaxed);
        let started = Instant::now();
        // The first stage to end tells whether this is a shutdown or a fault.
        let first = set.join_next_with_id().await;
        if stop_sources.is_cancelled() || stop_all.is_cancelled() {
            // Shutdown: the rest drain by themselves.
            while set.join_next().await.is_some() {}
            health.running.store(false, Ordering::Relaxed);
            return;
        }
        let (stage, why) = match &first {
            Some(Ok((id, ()))) => (names.get(id).copied().unwrap_or("?"), "returned".to_owned()),
            Some(Err(e)) => (
                names.get(&e.id()).copied().unwrap_or("?"),
                if e.is_panic() {
                    "panicked".to_owned()
                } else {
                    format!("was cancelled: {e}")
                },
            ),
            None => ("?", "none was running".to_owned()),
        };
        health.running.store(false, Ordering::Relaxed);
        health.restarted();
        metrics
            .pipeline_restarts_total
            .with_label_values(&[stage])
            .inc();
        tracing::error!(stage, why = %why, backoff_secs = backoff.as_secs(), "a pipeline stage ended unexpectedly; restarting the pipeline");
        set.shutdown().await;
        if started.elapsed() > WINDOW {
            backoff = first_backoff;
        }
        tokio::select! {
            _ = stop_sources.cancelled() => return,
            _ = stop_all.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_stage_that_panics_is_counted_and_the_pipeline_restarted() {
        let health = Arc::new(PipelineHealth::default());
        let metrics = crate::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let (stop_sources, stop_all) = (CancellationToken::new(), CancellationToken::new());
        let sets = Arc::new(AtomicUsize::new(0));
        let task = {
            let (health, metrics, sets) = (health.clone(), metrics.clone(), sets.clone());
            let (s, a) = (stop_sources.clone(), stop_all.clone());
            tokio::spawn(async move {
                supervise(&health, &metrics, &s, &a, Duration::from_millis(10), || {
                    let n = sets.fetch_add(1, Ordering::SeqCst);
                    let stop = s.clone();
                    let waits: Stage = ("results", async move { stop.cancelled().await }.boxed());
                    // The first two sets have a worker that panics; the third runs.
                    let worker: Stage = if n < 2 {
                        ("worker", async { panic!("a bug in a stage") }.boxed())
                    } else {
                        let stop = s.clone();
                        ("worker", async move { stop.cancelled().await }.boxed())
                    };
                    vec![waits, worker]
                })
                .await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sets.load(Ordering::SeqCst) < 3 || health.problem().is_some() {
            assert!(Instant::now() < deadline, "{:?}", health.problem());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let restarts = metrics
            .pipeline_restarts_total
            .with_label_values(&["worker"])
            .get();
        assert_eq!(restarts, 2);
        stop_sources.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("the supervisor did not stop"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            health.problem().as_deref(),
            Some("the sync pipeline is not running")
        );
    }

    #[test]
    fn a_crash_loop_is_unhealthy() {
        let health = PipelineHealth::default();
        health.running.store(true, Ordering::Relaxed);
        assert_eq!(health.problem(), None);
        for _ in 0..=MAX_RESTARTS_IN_WINDOW {
            health.restarted();
        }
        assert!(
            health
                .problem()
                .is_some_and(|p| p.contains("restarted 6 times"))
        );
    }
}
