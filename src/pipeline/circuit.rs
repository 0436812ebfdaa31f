//! The circuit breaker around the target. When calls fail for the whole target (retries
//! exhausted on 5xx or timeouts, or 429s for too long), the circuit opens: no chunk is claimed,
//! so no calls are burnt and no row is failed because of an outage; the jobs involved show
//! `paused` with a `paused_reason`. A probe calls the target with growing pauses; when it
//! answers, the circuit closes and paused jobs resume.
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
/// the cool-down of a circuit opened with `open_for` ends.
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
        Err(e) => tracing::warn!(error = %e, "cannot resume paused jobs"),
    }
    deps.wake_claimer.notify_waiters();
}
