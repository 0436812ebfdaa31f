//! Client-side pacing, shared by every worker of one target credential.
//!
//! A GCRA limiter (a leaky bucket measured in time): calls are spaced about `60 s / rpm` apart,
//! with a burst of about one second's worth, and never more than `rpm` in any 60 s window (the
//! steady rate is trimmed by the burst). The target's own view wins: when `inin-ratelimit-*`
//! says the window is spent, or a 429 names a `Retry-After`, every caller waits for it.
//!
//! Such a hold is what an operator sees as a job `waiting` (`rate_limited`, until when) and as
//! `rolesync_target_wait_seconds`: `hold_left` says how long the hold in force has to run, and
//! `visible_hold_left` the same for holds placed for at least `VISIBLE_HOLD` (the pacing's own
//! spacing and short holds are part of normal work, not a wait worth showing).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A hold placed for at least this long shows on the job (`waiting`).
pub const VISIBLE_HOLD: Duration = Duration::from_secs(2);

pub struct RateLimiter {
    state: Mutex<State>,
    interval: Duration,
    /// How far ahead of its theoretical time a call may go: the burst.
    tolerance: Duration,
}

struct State {
    /// Theoretical arrival time of the next call.
    tat: Instant,
    /// No call starts before this (429 or a spent window).
    hold_until: Option<Instant>,
    /// When `hold_until` was last moved later: the hold in force was placed for
    /// `hold_until - hold_placed`.
    hold_placed: Instant,
}

impl RateLimiter {
    pub fn new(requests_per_minute: u32) -> RateLimiter {
        let rpm = requests_per_minute.max(1);
        let burst = (rpm / 60).clamp(1, 20);
        // A burst on top of the steady rate must still fit the target's window: in any minute
        // at most `60 s / interval + burst - 1` calls start, which is kept one below `rpm`
        // (when rpm > 1). The slack is for the target's fixed window, which opens when the
        // first call arrives: that call is the slowest to arrive (it opens the connection,
        // maybe fetches the token), so a minute exactly full here could hold one call more
        // there (seen: one 429 in 10 000 calls at 6 000/min when the first call fetched its
        // token between its slot and its send).
        let interval = Duration::from_secs_f64(60.0 / f64::from((rpm - burst).max(1)));
        RateLimiter {
            state: Mutex::new(State {
                tat: Instant::now(),
                hold_until: None,
                hold_placed: Instant::now(),
            }),
            interval,
            tolerance: interval * (burst - 1),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next slot and waits for it.
    pub async fn acquire(&self) {
        let go_at = {
            let mut s = match self.state.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let now = Instant::now();
            let tat = s.tat.max(now);
            let mut go_at = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
            if let Some(hold) = s.hold_until {
                if hold > go_at {
                    go_at = hold;
                } else if hold <= now {
                    s.hold_until = None;
                }
            }
            s.tat = tat.max(go_at) + self.interval;
            go_at
        };
        tokio::time::sleep_until(go_at).await;
    }

    /// Holds every caller for `delay` (bounded by the caller; an instant beyond the clock's
    /// range holds for the longest the clock can express, never panics).
    pub fn hold_for(&self, delay: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(delay)
            .unwrap_or_else(|| now + super::bounds::MAX_SERVER_DELAY);
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if s.hold_until.is_none_or(|h| h < until) {
            s.hold_until = Some(until);
            s.hold_placed = now;
        }
        if s.tat < until {
            s.tat = until;
        }
    }

    /// How long the hold in force has to run; `None` when calls are not held.
    pub fn hold_left(&self) -> Option<Duration> {
        let s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        s.hold_until
            .filter(|h| *h > now)
            .map(|h| h.duration_since(now))
    }

    /// `hold_left`, for a hold placed for at least `VISIBLE_HOLD`.
    pub fn visible_hold_left(&self) -> Option<Duration> {
        let s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        s.hold_until
            .filter(|h| *h > now && h.duration_since(s.hold_placed) >= VISIBLE_HOLD)
            .map(|h| h.duration_since(now))
    }

    /// Reads the target's `inin-ratelimit-*` view (already bounded, `bounds`): when the window
    /// is spent, wait for its reset.
    pub fn observe(&self, allowed: Option<u64>, count: Option<u64>, reset: Option<Duration>) {
        if let (Some(allowed), Some(count), Some(reset)) = (allowed, count, reset)
            && allowed > 0
            && count >= allowed
        {
            self.hold_for(reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_configured_rate_after_a_burst() {
        let limiter = RateLimiter::new(600); // 10/s, burst 10
        let start = Instant::now();
        for _ in 0..30 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        // 10 in the burst, then 20 more at 100 ms each.
        assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_minute_holds_more_than_the_limit_even_with_the_burst() {
        for rpm in [60u32, 300, 600, 6000] {
            let limiter = RateLimiter::new(rpm);
            let start = Instant::now();
            let mut n = 0u32;
            loop {
                limiter.acquire().await;
                if start.elapsed() >= Duration::from_secs(60) {
                    break;
                }
                n += 1;
            }
            assert!(n < rpm, "{rpm}/min: {n} calls started in the first minute");
            assert!(
                n + 25 >= rpm,
                "{rpm}/min: only {n} calls in the first minute"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_every_caller() {
        let limiter = RateLimiter::new(6000);
        limiter.hold_for(Duration::from_secs(3));
        let start = Instant::now();
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_hold_is_visible_until_it_ends_and_a_short_one_never() {
        let limiter = RateLimiter::new(6000);
        assert_eq!(limiter.hold_left(), None);
        limiter.hold_for(Duration::from_millis(500));
        assert!(limiter.hold_left().is_some());
        assert_eq!(
            limiter.visible_hold_left(),
            None,
            "a short hold is not shown"
        );
        limiter.hold_for(VISIBLE_HOLD);
        assert_eq!(limiter.visible_hold_left(), Some(VISIBLE_HOLD));
        // Visible for its whole length, not only while more than VISIBLE_HOLD is left.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            limiter.visible_hold_left(),
            Some(Duration::from_millis(500))
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.visible_hold_left(), None);
        assert_eq!(limiter.hold_left(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_window_holds_until_reset() {
        let limiter = RateLimiter::new(6000);
        limiter.observe(Some(300), Some(300), Some(Duration::from_secs(7)));
        let start = Instant::now();
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(7));
    }
}
