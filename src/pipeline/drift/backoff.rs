//! The backoff between the drift feed's fall backs to a full scan (pure; README, Drift): a feed
//! that keeps failing must not cost a full scan every poll. After the first scan of a streak
//! the next may start `drift.poll_secs` × 2 later, then × 4, × 8, … up to
//! `drift.fallback_backoff_max_secs`; a poll that fails meanwhile starts no scan and leaves the
//! checkpoint where it was (the next scan, or the feed once it answers, covers the gap). A
//! successful poll ends the streak. No clock here: times are passed in.

/// Consecutive fallback scans since the last successful poll, and when the last one started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    scans: u32,
    last_ms: Option<i64>,
}

/// What a poll that cannot read the feed does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Start a full scan now.
    Scan,
    /// Start none: the backoff allows the next scan at `until_ms`.
    Wait { until_ms: i64 },
}

impl Backoff {
    /// How long after the last scan the next may start: `poll_ms` × 2^scans, at most `cap_ms`;
    /// 0 before the first scan of a streak.
    pub fn wait_ms(&self, poll_ms: i64, cap_ms: i64) -> i64 {
        if self.scans == 0 {
            return 0;
        }
        let factor = 1_i64 << self.scans.min(40);
        poll_ms.saturating_mul(factor).min(cap_ms).max(0)
    }

    pub fn decide(&self, now_ms: i64, poll_ms: i64, cap_ms: i64) -> Fallback {
        match self.last_ms {
            None => Fallback::Scan,
            Some(last) => {
                let until_ms = last.saturating_add(self.wait_ms(poll_ms, cap_ms));
                if now_ms >= until_ms {
                    Fallback::Scan
                } else {
                    Fallback::Wait { until_ms }
                }
            }
        }
    }

    /// A scan started at `now_ms`.
    pub fn scanned(&mut self, now_ms: i64) {
        self.scans = self.scans.saturating_add(1);
        self.last_ms = Some(now_ms);
    }

    /// A poll succeeded: the next failure scans at once.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    pub fn scans(&self) -> u32 {
        self.scans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_are_spaced_by_a_doubling_wait_up_to_the_cap_and_reset_by_a_success() {
        let (poll, cap) = (60_000, 3_600_000);
        let mut b = Backoff::default();
        let mut now = 0;
        let mut starts = Vec::new();
        // A poll every minute for six hours, the feed failing throughout.
        for _ in 0..360 {
            if b.decide(now, poll, cap) == Fallback::Scan {
                b.scanned(now);
                starts.push(now / 60_000);
            }
            now += poll;
        }
        // Minutes 0, 2, 6, 14, 30, 62, then every hour (the cap).
        assert_eq!(&starts[..9], &[0, 2, 6, 14, 30, 62, 122, 182, 242]);
        assert_eq!(starts.len(), 10);
        assert_eq!(b.wait_ms(poll, cap), cap);
        assert_eq!(
            b.decide(now, poll, cap),
            Fallback::Wait {
                until_ms: 302 * 60_000 + cap
            }
        );
        b.reset();
        assert_eq!(b.decide(now, poll, cap), Fallback::Scan);
        assert_eq!(b.wait_ms(poll, cap), 0);
        b.scanned(now);
        assert_eq!(b.wait_ms(poll, cap), 2 * poll);
    }

    #[test]
    fn huge_streaks_and_small_caps_stay_bounded() {
        let mut b = Backoff::default();
        for i in 0..100 {
            b.scanned(i);
        }
        assert_eq!(b.scans(), 100);
        assert_eq!(b.wait_ms(86_400_000, 3_600_000), 3_600_000);
        assert_eq!(b.wait_ms(i64::MAX, i64::MAX), i64::MAX);
        // A cap below the poll interval: no backoff beyond it.
        assert_eq!(b.wait_ms(60_000, 1_000), 1_000);
        assert_eq!(b.decide(99 + 1_000, 60_000, 1_000), Fallback::Scan);
    }
}
