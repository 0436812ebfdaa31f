//! The circuit breaker around the target. When calls fail for the whole target (retries
//! exhausted on 5xx or timeouts, or 429s for too long), the circuit opens: no chunk is claimed,
//! so no calls are burnt and no row is failed because of an outage; the jobs involved show
//! `paused` with a `paused_reason`. A probe calls the target with growing pauses; when it
//! answers, the circuit closes and paused jobs resume.
//!
//! **Evidence first.** A 5xx or a time-out that outlived a call's retries is, on its own, one
//! user's failure: the target may be failing for that user only (a broken record behind a
//! proxy, say). The target is declared down only when `sync.outage_min_users` distinct users
//! failed that way within `sync.outage_window_secs` with no success between (`Evidence`), or
//! when a 429 outlived its budget, or the credentials are refused. So one user that always
//! fails ends `failed` after its own attempts and never pauses its job, nor anyone else's.
//!
//! `error_ratio` is different: the target answers, but refuses most of a job's users. An
//! answering probe proves nothing then, so that circuit opens for a fixed cool-down and closes
//! when it ends (if the refusals go on, the next chunk trips it again, for a longer cool-down).

use super::Deps;
use crate::domain::PausedReason;
use crate::scim::{CallTally, ScimError};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetState {
    Up,
    Down,
}

#[derive(Default)]
pub struct Circuit {
    down: Mutex<Option<Open>>,
    changed: Notify,
    evidence: Mutex<Evidence>,
}

/// Recent per-user failures that may mean the target is down: (when, which user), oldest
/// first, cleared by any success. Bounded by `outage_min_users` entries.
#[derive(Default)]
struct Evidence {
    failures: std::collections::VecDeque<(Instant, String)>,
}

#[derive(Clone, Copy)]
struct Open {
    reason: PausedReason,
    /// Closes at this time without a probe (`error_ratio`); `None`: when a probe is answered.
    until: Option<Instant>,
}

impl Circuit {
    pub(crate) fn state(&self) -> TargetState {
        match self.down.lock() {
            Ok(d) if d.is_some() => TargetState::Down,
            Ok(_) => TargetState::Up,
            Err(_) => TargetState::Up,
        }
    }

    /// The machine-readable reason while open.
    pub(crate) fn reason(&self) -> Option<PausedReason> {
        self.down.lock().ok().and_then(|d| d.map(|o| o.reason))
    }

    /// When an open circuit closes by itself (`open_for`), if it does.
    fn closes_at(&self) -> Option<Instant> {
        self.down.lock().ok().and_then(|d| d.and_then(|o| o.until))
    }

    /// Opens until a probe is answered. Returns false if it was open already (the first reason
    /// stays).
    pub(crate) fn open(&self, reason: PausedReason) -> bool {
        self.open_with(reason, None)
    }

    /// Opens for `cool_down`, then closes without a probe. Returns false if it was open already.
    pub(crate) fn open_for(&self, reason: PausedReason, cool_down: Duration) -> bool {
        self.open_with(reason, Some(Instant::now() + cool_down))
    }

    fn open_with(&self, reason: PausedReason, until: Option<Instant>) -> bool {
        match self.down.lock() {
            Ok(mut d) if d.is_none() => {
                match until {
                    Some(t) => tracing::warn!(
                        paused_reason = reason.as_str(),
                        cool_down_secs = t.saturating_duration_since(Instant::now()).as_secs_f64(),
                        "pausing work for a cool-down"
                    ),
                    None => {
                        tracing::warn!(
                            paused_reason = reason.as_str(),
                            "target unavailable: pausing work"
                        )
                    }
                }
                *d = Some(Open { reason, until });
                self.changed.notify_waiters();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn close(&self) {
        if let Ok(mut d) = self.down.lock()
            && d.take().is_some()
        {
            tracing::info!("target answers again: resuming work");
            self.changed.notify_waiters();
        }
    }

    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A call about `user` failed for a reason that may pass. True when that makes enough
    /// distinct users within `window` to call the target down (`min_users`).
    pub(crate) fn user_failed(&self, user: &str, min_users: usize, window: Duration) -> bool {
        let mut e = self
            .evidence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        e.failures
            .retain(|(t, u)| now.duration_since(*t) <= window && u != user);
        e.failures.push_back((now, user.to_owned()));
        while e.failures.len() > min_users.max(1) {
            e.failures.pop_front();
        }
        e.failures.len() >= min_users
    }

    /// A call answered: the target is up, the evidence so far is void.
    pub(crate) fn call_succeeded(&self) {
        if let Ok(mut e) = self.evidence.lock()
            && !e.failures.is_empty()
        {
            e.failures.clear();
        }
    }
}

/// The `paused_reason` for an error that concerns the whole target.
pub(crate) fn paused_reason(e: &ScimError) -> PausedReason {
    match e {
        ScimError::RateLimited => PausedReason::RateLimited,
        ScimError::AuthFailed { .. } | ScimError::Forbidden { .. } => PausedReason::AuthFailed,
        _ => PausedReason::TargetUnavailable,
    }
}

/// While the circuit is open, probes the target; closes it when the target answers, or when
/// the cool-down of a circuit opened with `open_for` ends. While it is closed, lifts the pauses
/// nobody else will (`sweep`).
pub(crate) async fn probe(deps: Deps, stop: CancellationToken) {
    let mut pause = Duration::from_millis(500);
    loop {
        if deps.circuit.state() == TargetState::Up {
            pause = Duration::from_millis(500);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = deps.circuit.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            if deps.circuit.state() == TargetState::Up {
                sweep(&deps).await;
            }
            continue;
        }
        if let Some(until) = deps.circuit.closes_at() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(until) => {}
            }
            resume(&deps).await;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let tally = CallTally::default();
        match deps.scim.count_users(&tally).await {
            Ok(_) => resume(&deps).await,
            Err(e) => {
                tracing::debug!(error = %e, "target still unavailable");
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn resume(deps: &Deps) {
    deps.circuit.close();
    match deps.store.resume_paused().await {
        Ok(n) => tracing::info!(jobs = n, "paused jobs resumed"),
        // The circuit is closed now, so nothing here would try again: `sweep` does, once the
        // pause is old enough that no live process can still mean it.
        Err(e) => tracing::warn!(error = %e, "cannot resume paused jobs; the sweep resumes them"),
    }
    deps.wake_claimer.notify_waiters();
}

/// Lifts pauses no live process will lift: a job paused for the target more than two leases
/// ago (the process that paused it had its probe running since, or died: its probe would
/// have resumed it by now, or it never will), or for an `error_ratio` cool-down older than the
/// longest cool-down. Found by the chaos test: a resume that met a store cut left a job
/// `paused` for good, and so did a replica killed while its job was paused.
async fn sweep(deps: &Deps) {
    let now = crate::store::now_ms();
    let target_before = now - 2 * deps.lease_ms();
    let cool_down_ms = i64::try_from(
        deps.settings
            .sync
            .error_ratio_cooldown_max_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX);
    let cool_down_before = now.saturating_sub(cool_down_ms.max(2 * deps.lease_ms()));
    match deps
        .store
        .resume_stale_paused(target_before, cool_down_before)
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(jobs = n, "paused jobs resumed: nobody else would have");
            deps.wake_claimer.notify_waiters();
        }
        Err(e) => tracing::debug!(error = %e, "cannot look for stale pauses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_failing_again_and_again_is_no_outage() {
        let c = Circuit::default();
        let w = Duration::from_secs(60);
        for _ in 0..50 {
            assert!(!c.user_failed("EMP-7", 3, w));
        }
        assert!(!c.user_failed("EMP-8", 3, w));
        assert!(
            c.user_failed("EMP-9", 3, w),
            "three distinct users within the window"
        );
    }

    #[test]
    fn a_success_voids_the_evidence() {
        let c = Circuit::default();
        let w = Duration::from_secs(60);
        assert!(!c.user_failed("a", 3, w));
        assert!(!c.user_failed("b", 3, w));
        c.call_succeeded();
        assert!(!c.user_failed("c", 3, w));
        assert!(!c.user_failed("d", 3, w));
        assert!(c.user_failed("e", 3, w));
    }
}
