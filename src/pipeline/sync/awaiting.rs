//! Joiners awaiting their account: a sync's user not found in the target is looked up again
//! on a backoff for up to `sync.await_user_secs` before its rows end `not_found`. Pure
//! decisions only; the rows stay `pending` with `awaiting_since_ms` set (`Store::complete_chunk`)
//! and their chunk is claimable again, by any replica, when the next lookup is due.
//!
//! Schedule, from the first lookup that missed (`since`): the wait before the next lookup is
//! the time waited so far, at least `first` and at most `cap` (so it doubles: first, first,
//! 2·first, ... cap, cap, ...), and the last lookup is at `since + await` exactly. A chunk
//! run late only waits longer, so `worst_case_lookups` bounds the calls however runs slip.

use crate::configuration::SyncSettings;

/// What a lookup that found no user means for a user of a sync job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Keep waiting: look again at `next_at_ms`. `since_ms` is when the wait began.
    Wait { since_ms: i64, next_at_ms: i64 },
    /// The wait is off, or over: the rows end `not_found`. `waited_secs` is 0 when off.
    NotFound { waited_secs: i64 },
}

/// The wait settings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AwaitPolicy {
    pub(crate) await_ms: i64,
    pub(crate) first_ms: i64,
    pub(crate) cap_ms: i64,
}

impl AwaitPolicy {
    pub(crate) fn of(s: &SyncSettings) -> AwaitPolicy {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        AwaitPolicy {
            await_ms: ms(s.await_user_secs),
            first_ms: ms(s.await_user_first_retry_secs).max(1),
            cap_ms: ms(s.await_user_max_retry_secs).max(1),
        }
    }

    /// The decision for a user not found at `now_ms`, whose wait began at `since_ms` (None: this
    /// is the first lookup that missed).
    pub(crate) fn missing(&self, since_ms: Option<i64>, now_ms: i64) -> Missing {
        if self.await_ms <= 0 {
            return Missing::NotFound { waited_secs: 0 };
        }
        let since = since_ms.unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(since).max(0);
        if elapsed >= self.await_ms {
            return Missing::NotFound {
                waited_secs: elapsed / 1000,
            };
        }
        let wait = elapsed.clamp(self.first_ms, self.cap_ms.max(self.first_ms));
        let next_at_ms = now_ms
            .saturating_add(wait)
            .min(since.saturating_add(self.await_ms));
        Missing::Wait {
            since_ms: since,
            next_at_ms,
        }
    }

    /// Lookups of one user whose account never appears, if every run is on time (the most:
    /// a late run only waits longer). Each lookup is one SCIM call (`externalId eq`).
    #[cfg(test)]
    pub(crate) fn worst_case_lookups(&self) -> u64 {
        let mut now = 0i64;
        let mut lookups = 1u64;
        while let Missing::Wait { next_at_ms, .. } = self.missing(Some(0), now) {
            now = next_at_ms;
            lookups += 1;
        }
        lookups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(await_s: i64, first_s: i64, cap_s: i64) -> AwaitPolicy {
        AwaitPolicy {
            await_ms: await_s * 1000,
            first_ms: first_s * 1000,
            cap_ms: cap_s * 1000,
        }
    }

    #[test]
    fn the_wait_doubles_from_the_first_interval_up_to_the_cap_and_ends_at_the_deadline() {
        let p = policy(3600, 30, 900);
        let mut at = vec![0];
        let mut now = 0;
        while let Missing::Wait {
            next_at_ms,
            since_ms,
        } = p.missing(Some(0), now)
        {
            assert_eq!(since_ms, 0);
            now = next_at_ms;
            at.push(now / 1000);
        }
        assert_eq!(at, vec![0, 30, 60, 120, 240, 480, 960, 1860, 2760, 3600]);
        assert_eq!(
            p.missing(Some(0), 3_600_000),
            Missing::NotFound { waited_secs: 3600 }
        );
    }

    #[test]
    fn the_documented_worst_case_holds_for_the_defaults() {
        // config/default.toml: 2 + k + ceil((await - 2^k·first) / max), k = ceil(log2(30)) = 5.
        assert_eq!(policy(86_400, 30, 900).worst_case_lookups(), 2 + 5 + 95);
        assert_eq!(policy(3600, 30, 900).worst_case_lookups(), 10);
    }

    #[test]
    fn zero_turns_the_wait_off() {
        assert_eq!(
            policy(0, 30, 900).missing(None, 5),
            Missing::NotFound { waited_secs: 0 }
        );
    }

    #[test]
    fn a_first_miss_starts_the_wait_now() {
        assert_eq!(
            policy(60, 2, 8).missing(None, 10_000),
            Missing::Wait {
                since_ms: 10_000,
                next_at_ms: 12_000
            }
        );
    }
}
