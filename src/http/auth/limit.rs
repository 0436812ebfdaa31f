//! Failed authentications per source address: a fixed window per address; once an address has
//! failed `max_failures` times in its window, every attempt from it is refused (429,
//! `Retry-After` = what is left of the window) until the window ends. Memory is bounded: at most
//! `max_addresses` windows are held; when full, ended windows are dropped, then the oldest.
//! The decisions take the time as an argument, so they are tested without a clock.

use crate::configuration::FailedAuthSettings;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    max_addresses: usize,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimiter {
    pub fn new(s: &FailedAuthSettings) -> FailureLimiter {
        FailureLimiter {
            max_failures: s.max_failures,
            window: Duration::from_secs(s.window_secs),
            max_addresses: s.max_addresses,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds)` to wait when `addr` may not try now.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.get(&addr)?;
        let elapsed = now.saturating_duration_since(w.started);
        if elapsed >= self.window || w.failures < self.max_failures {
            return None;
        }
        Some((self.window - elapsed).as_secs().max(1))
    }

    /// Counts a failure of `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(&addr) && windows.len() >= self.max_addresses {
            let window = self.window;
            windows.retain(|_, w| now.saturating_duration_since(w.started) < window);
            if windows.len() >= self.max_addresses
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(a, _)| *a)
            {
                windows.remove(&oldest);
            }
        }
        let w = windows.entry(addr).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.started) >= self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Addresses held (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, addrs: usize) -> FailureLimiter {
        FailureLimiter::new(&FailedAuthSettings {
            max_failures: max,
            window_secs: 60,
            max_addresses: addrs,
        })
    }

    #[test]
    fn an_address_is_held_after_its_failures_until_the_window_ends() {
        let l = limiter(3, 100);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for _ in 0..2 {
            l.failed(a, t0);
        }
        assert_eq!(l.blocked(a, t0), None);
        l.failed(a, t0);
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), Some(50));
        assert_eq!(l.blocked(b, t0), None, "another address is not held");
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(60)), None);
        l.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(
            l.blocked(a, t0 + Duration::from_secs(61)),
            None,
            "a new window"
        );
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_addresses() {
        let l = limiter(3, 50);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            l.failed(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(l.tracked() <= 50);
    }
}
