//! The work this process is doing right now: the chunks its workers are running and the jobs
//! its planner is planning. The heartbeat renews the leases of these, and of nothing else, so a
//! chunk or a plan abandoned on an error, or whose task panicked, is not kept leased: its lease
//! runs out and the work is claimed again (here or by another replica).
//!
//! Invariant: an entry exists exactly as long as its guard (`LiveChunk`, `LivePlan`), which the
//! task doing the work holds; a task that ends, by returning or by unwinding, drops it.

use crate::store::HeldChunk;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
pub(crate) struct LiveWork {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (job, chunk, fence) → how many guards. A chunk re-claimed by this process while an
    /// older run of it still unwinds has two entries, one per fence: only the newer one's
    /// lease can be renewed.
    chunks: HashMap<HeldChunk, usize>,
    plans: HashMap<String, usize>,
}

impl LiveWork {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a chunk, as claimed under `fence`, live until the guard is dropped.
    pub(crate) fn chunk(self: &Arc<Self>, job_id: &str, chunk_no: i64, fence: i64) -> LiveChunk {
        let key = (job_id.to_owned(), chunk_no, fence);
        *self.lock().chunks.entry(key.clone()).or_default() += 1;
        LiveChunk {
            live: self.clone(),
            key,
        }
    }

    /// Marks a job's planning live until the guard is dropped.
    pub(crate) fn plan(self: &Arc<Self>, job_id: &str) -> LivePlan {
        *self.lock().plans.entry(job_id.to_owned()).or_default() += 1;
        LivePlan {
            live: self.clone(),
            job_id: job_id.to_owned(),
        }
    }

    /// The chunks and plans live now, for the heartbeat.
    pub(crate) fn snapshot(&self) -> (Vec<HeldChunk>, Vec<String>) {
        let inner = self.lock();
        (
            inner.chunks.keys().cloned().collect(),
            inner.plans.keys().cloned().collect(),
        )
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

pub(crate) struct LiveChunk {
    live: Arc<LiveWork>,
    key: HeldChunk,
}

impl Drop for LiveChunk {
    fn drop(&mut self) {
        release(&mut self.live.lock().chunks, &self.key);
    }
}

pub(crate) struct LivePlan {
    live: Arc<LiveWork>,
    job_id: String,
}

impl Drop for LivePlan {
    fn drop(&mut self) {
        release(&mut self.live.lock().plans, &self.job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_live_exactly_while_its_guard_is_held() {
        let live = Arc::new(LiveWork::default());
        let a = live.chunk("j", 1, 1);
        let a2 = live.chunk("j", 1, 1);
        let p = live.plan("k");
        assert_eq!(
            live.snapshot(),
            (vec![("j".to_owned(), 1, 1)], vec!["k".to_owned()])
        );
        drop(a);
        assert_eq!(live.snapshot().0.len(), 1, "a second guard keeps it live");
        drop(a2);
        drop(p);
        assert_eq!(live.snapshot(), (Vec::new(), Vec::new()));
        // A panicking task drops its guard while unwinding.
        let live2 = live.clone();
        let r = std::thread::spawn(move || {
            let _g = live2.chunk("j", 2, 1);
            panic!("worker died");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(live.snapshot().0.len(), 0);
    }
}
