//! The circuit breaker around the target. When calls fail for the whole target (retries
//! exhausted on 5xx or timeouts, or 429s for too long), the circuit opens: no chunk is claimed,
//! so no calls are burnt and no row is failed because of an outage; the jobs involved show
//! `paused` with a `paused_reason`. A probe calls the target with growing pauses; when it
//! answers, the circuit closes and paused jobs resume.

use super::Deps;
use crate::scim::{CallTally, ScimError};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Up,
    Down,
}

#[derive(Default)]
pub struct Circuit {
    down: Mutex<Option<&'static str>>,
    changed: Notify,
}

impl Circuit {
    pub fn state(&self) -> TargetState {
        match self.down.lock() {
            Ok(d) if d.is_some() => TargetState::Down,
            Ok(_) => TargetState::Up,
            Err(_) => TargetState::Up,
        }
    }

    /// The machine-readable reason while open.
    pub fn reason(&self) -> Option<&'static str> {
        self.down.lock().ok().and_then(|d| *d)
    }

    pub fn open(&self, reason: &'static str) {
        if let Ok(mut d) = self.down.lock()
            && d.is_none()
        {
            tracing::warn!(paused_reason = reason, "target unavailable: pausing work");
            *d = Some(reason);
            self.changed.notify_waiters();
        }
    }

    pub fn close(&self) {
        if let Ok(mut d) = self.down.lock()
            && d.take().is_some()
        {
            tracing::info!("target answers again: resuming work");
            self.changed.notify_waiters();
        }
    }

    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// The `paused_reason` for an error that concerns the whole target.
pub fn paused_reason(e: &ScimError) -> &'static str {
    match e {
        ScimError::RateLimited => "rate_limited",
        ScimError::AuthFailed { .. } | ScimError::Forbidden { .. } => "auth_failed",
        _ => "target_unavailable",
    }
}

/// While the circuit is open, probes the target; closes it when the target answers.
pub async fn probe(deps: Deps, stop: CancellationToken) {
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
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let tally = CallTally::default();
        match deps.scim.count_users(&tally).await {
            Ok(_) => {
                deps.circuit.close();
                match deps.store.resume_paused().await {
                    Ok(n) => tracing::info!(jobs = n, "paused jobs resumed"),
                    Err(e) => tracing::warn!(error = %e, "cannot resume paused jobs"),
                }
                deps.wake_claimer.notify_waiters();
            }
            Err(e) => {
                tracing::debug!(error = %e, "target still unavailable");
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}
