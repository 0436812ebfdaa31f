//! What the calls of one piece of work share: how many were spent (added to the job's `scim`
//! counts), the signal that stops them, and the lease they are made under.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Calls spent on behalf of one job, added to the job's `scim` counts; and the stop signal of
/// the work they are spent for.
#[derive(Debug, Default)]
pub struct CallTally {
    pub requests: AtomicI64,
    pub retries: AtomicI64,
    pub rate_limited: AtomicI64,
    /// Once set, no further call of this tally is sent: calls already queued (for the in-flight
    /// permit, the limiter, a retry pause) end with `ScimError::Stopped` instead.
    stopped: AtomicBool,
    /// The lease the calls are made under, when they are a chunk's (`pipeline::fence`): no
    /// call leaves after its `send_until`, and none is waited for past its `expires`.
    lease: std::sync::Mutex<Option<LeaseWindow>>,
    /// Sent as `x-correlation-id` with every call, so the target's logs name the work.
    pub(super) correlation: Option<String>,
}

/// Until when a worker may send calls under its chunk's lease, and when the lease itself runs
/// out in the store, as instants of this process's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseWindow {
    pub send_until: Instant,
    pub expires: Instant,
}

impl CallTally {
    /// The tally of one chunk run: its calls carry `correlation` and are fenced by `lease`.
    pub fn fenced(correlation: String, lease: LeaseWindow) -> CallTally {
        CallTally {
            lease: std::sync::Mutex::new(Some(lease)),
            correlation: Some(correlation),
            ..CallTally::default()
        }
    }

    /// Stops every call of this tally that is not yet sent. Calls on the wire finish.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The lease was renewed: calls may leave until the new window's `send_until`. A window
    /// never moves back (a late answer of an older renewal does not shorten a newer one).
    pub fn extend_lease(&self, window: LeaseWindow) {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        match *lease {
            Some(w) if w.send_until >= window.send_until => {}
            _ => *lease = Some(window),
        }
    }

    /// Whether the lease's send window has passed (never, for calls made under no lease).
    pub fn lease_expired(&self) -> bool {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|w| Instant::now() >= w.send_until)
    }

    /// May a call leave now? Not once stopped; not past the lease's send window, which also
    /// stops the tally (the run learns why from `lease_expired`). With a lease, also how long
    /// the call may take: no answer is waited for past the lease's expiry in the store.
    pub(crate) fn may_send(&self) -> Result<Option<Duration>, ()> {
        if self.is_stopped() {
            return Err(());
        }
        let lease = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        match lease {
            None => Ok(None),
            Some(w) => {
                let now = Instant::now();
                if now >= w.send_until {
                    self.stop();
                    return Err(());
                }
                Ok(Some(w.expires.saturating_duration_since(now)))
            }
        }
    }

    pub fn snapshot(&self) -> (i64, i64, i64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.rate_limited.load(Ordering::Relaxed),
        )
    }
}
