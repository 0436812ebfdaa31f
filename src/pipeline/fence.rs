//! Fencing: a worker sends a write only while it provably holds the chunk the write is for.
//!
//! **Invariant.** Every write rolesync sends to the target is preceded by its intent, recorded
//! in the store by a statement that succeeds only if the worker still holds the chunk's lease
//! under the fence it claimed with, with at least a third of the lease left
//! (`Store::mark_intent`). Every call of a chunk run leaves only before the run's send
//! deadline, two thirds of a lease after the last confirmation that the lease was held (the
//! claim, or a heartbeat's renewal), and is not waited for past the lease's expiry
//! (`CallTally::may_send`). So every write a worker sends reaches the target, or is given up,
//! before its lease can have run out, and its intent is in the store before any other worker
//! can claim the chunk.
//!
//! **Consequences.**
//! - A worker that lost its lease (a store cut kept it from renewing, or another worker took
//!   the chunk over) sends nothing more: the heartbeat stops its run as soon as it learns of
//!   the loss (`ChunkRuns::lease_lost`), the send deadline stops it on its own when no renewal
//!   came, and a refused intent stops it at the next user.
//! - The next owner of the chunk decides each user with the intents as they are *after* it
//!   read the user from the target (`sync::fresh_intent`): a write of an earlier owner that
//!   reached the target before that read had its intent recorded before it, so it is found
//!   and reported `applied` with its diff, never `unchanged`. A write that lands after the
//!   read changes the user's version, so the new owner's own write (with `If-Match`) is
//!   refused and the user read again.
//! - A fence is taken by each claim (`chunks.fence`); statements of a run name it, so an older
//!   run of the same process, still unwinding after its lease ran out, changes nothing either.
//!
//! Clocks: a lease's expiry is written with the claiming replica's wall clock and compared with
//! another replica's; the third of a lease kept in hand (20 s with the default 60 s lease)
//! covers the clock skew between replicas and a write's time on the wire.

use crate::scim::LeaseWindow;
use std::time::Duration;
use tokio::time::Instant;

/// How much of a lease a worker keeps in hand: it stops sending this long before the lease
/// would run out, and records an intent only with at least this much left.
pub(crate) fn margin_ms(lease_ms: i64) -> i64 {
    (lease_ms / 3).max(1)
}

/// The window a lease confirmed at `confirmed` (the instant before the statement that claimed
/// or renewed it was sent) gives its holder.
pub(crate) fn window(confirmed: Instant, lease_ms: i64) -> LeaseWindow {
    let lease = u64::try_from(lease_ms).unwrap_or(0);
    let margin = u64::try_from(margin_ms(lease_ms)).unwrap_or(0);
    LeaseWindow {
        send_until: confirmed + Duration::from_millis(lease.saturating_sub(margin)),
        expires: confirmed + Duration::from_millis(lease),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_stops_sending_a_third_of_a_lease_before_it_runs_out() {
        let t = Instant::now();
        let w = window(t, 60_000);
        assert_eq!(w.send_until - t, Duration::from_secs(40));
        assert_eq!(w.expires - t, Duration::from_secs(60));
        assert_eq!(margin_ms(60_000), 20_000);
        // A heartbeat every third of a lease keeps the window ahead of the clock.
        let renewed = window(t + Duration::from_secs(20), 60_000);
        assert!(renewed.send_until > w.send_until);
    }
}
