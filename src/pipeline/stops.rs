//! Why a chunk run stops before its last user, and how the other chunks of its job learn it.
//!
//! A chunk runs its users `target.max_concurrency` at a time. It stops starting users, and
//! drops the calls of its users that are still queued (`CallTally::stop`), when:
//! - a call fails for the whole target (403, refused credentials, target down, 429s for too
//!   long): every other user of the job would fail the same way, one refused call each;
//! - the circuit opened while it ran (another chunk found the target down).
//!
//! A stopped chunk is released uncommitted (`ChunkOutcome::Release`): the users it did not start
//! are simply not part of any outcome, and the re-run reads the users it did write as already
//! right. Chunks of the same job running in this process are stopped together (`ChunkRuns`).

use crate::scim::{CallTally, ScimError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

/// Why a chunk run stopped early.
#[derive(Debug, Clone)]
pub enum Stop {
    /// A call failed for the whole target.
    Target(ScimError),
    /// The circuit was open (with this reason) when a user was about to start.
    CircuitOpen(&'static str),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Target(e) => write!(f, "{e}"),
            Stop::CircuitOpen(reason) => write!(f, "the circuit is open ({reason})"),
        }
    }
}

/// One run of one chunk: the calls it spends, and why it stopped, if it did.
#[derive(Default)]
pub struct ChunkRun {
    pub tally: CallTally,
    why: OnceLock<Stop>,
}

impl ChunkRun {
    /// Stops the run: no new user starts, queued calls are not sent. The first reason stays.
    pub fn stop(&self, why: Stop) {
        let _ = self.why.set(why);
        self.tally.stop();
    }

    pub fn stopped(&self) -> Option<&Stop> {
        self.why.get()
    }
}

/// The chunk runs in progress in this process, by job, and the jobs stopped whose stop the
/// results stage has not handled yet. A poisoned lock is recovered: each update leaves the
/// maps consistent, and a stop must never be lost (a stopped chunk must not be committed).
#[derive(Default)]
pub struct ChunkRuns {
    inner: Mutex<RunsInner>,
}

#[derive(Default)]
struct RunsInner {
    runs: HashMap<String, Vec<Weak<ChunkRun>>>,
    /// A chunk of the job claimed before its stop is handled (job failed or paused, circuit
    /// open) starts stopped, instead of spending calls that would fail the same way.
    stopped: HashMap<String, Stop>,
}

impl ChunkRuns {
    /// Registers a run until it is dropped. A run of a job stopped and not yet settled starts
    /// stopped.
    pub fn register(&self, job_id: &str, run: &Arc<ChunkRun>) {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // Runs end by being dropped: forget them here, so the map holds live runs only.
        m.runs.retain(|_, runs| {
            runs.retain(|r| r.strong_count() > 0);
            !runs.is_empty()
        });
        if let Some(why) = m.stopped.get(job_id) {
            run.stop(why.clone());
        }
        m.runs
            .entry(job_id.to_owned())
            .or_default()
            .push(Arc::downgrade(run));
    }

    /// Stops every run of the job in this process, and the runs that start until `settle`.
    pub fn stop_job(&self, job_id: &str, why: &Stop) {
        let runs: Vec<Arc<ChunkRun>> = {
            let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            m.stopped
                .entry(job_id.to_owned())
                .or_insert_with(|| why.clone());
            m.runs
                .get(job_id)
                .into_iter()
                .flatten()
                .filter_map(Weak::upgrade)
                .collect()
        };
        for r in runs {
            r.stop(why.clone());
        }
    }

    /// The results stage handled a stop of the job (failed it, or paused it and opened the
    /// circuit): chunks claimed from now on are judged afresh (a failed job has no pending
    /// row left; a paused one is not claimed until it resumes).
    pub fn settle(&self, job_id: &str) {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        m.stopped.remove(job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_a_job_stops_its_runs_only() {
        let runs = ChunkRuns::default();
        let a1 = Arc::new(ChunkRun::default());
        let a2 = Arc::new(ChunkRun::default());
        let b = Arc::new(ChunkRun::default());
        runs.register("a", &a1);
        runs.register("a", &a2);
        runs.register("b", &b);
        runs.stop_job("a", &Stop::Target(ScimError::RateLimited));
        assert!(a1.stopped().is_some() && a1.tally.is_stopped());
        assert!(a2.stopped().is_some());
        assert!(b.stopped().is_none() && !b.tally.is_stopped());
        // The first reason stays.
        a1.stop(Stop::CircuitOpen("target_unavailable"));
        assert!(matches!(a1.stopped(), Some(Stop::Target(_))));
        // A run that starts before the stop is settled starts stopped; after, it does not.
        let a3 = Arc::new(ChunkRun::default());
        runs.register("a", &a3);
        assert!(matches!(a3.stopped(), Some(Stop::Target(_))));
        runs.settle("a");
        let a4 = Arc::new(ChunkRun::default());
        runs.register("a", &a4);
        assert!(a4.stopped().is_none());
    }
}
