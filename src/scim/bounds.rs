//! Numbers the target sends back, read without panic or overflow and clamped to bounds.
//!
//! A duration from the target decides how long rolesync waits; a broken or hostile value
//! (`inin-ratelimit-reset: 18446744073709551615`, `expires_in: 1e30`) must neither panic on
//! `Instant + huge` nor park the sync for ever. Every such value goes through this module:
//!
//! | value | accepted | beyond it |
//! |---|---|---|
//! | `Retry-After` (seconds or HTTP date) | 0 to the window (`target.rate_limit_window_secs`, 60 s) | the window |
//! | `inin-ratelimit-reset` (seconds) | 1 s to the window | the window |
//! | either, whatever the window | at most `target.max_server_delay_secs` (120 s) | clamped |
//! | token `expires_in` (seconds) | `MIN_TOKEN_TTL` (1 s) to `MAX_TOKEN_TTL` (24 h) | clamped; absent or not a number: 3600 s |
//! | `inin-ratelimit-allowed` / `-count` | 0 to 2^53 | ignored |
//!
//! Genesys' rate-limit window is one minute: the window reopens within it, so a `Retry-After` or
//! a reset beyond it is not a real wait (seen: `18446744073709551615` on three answers held a
//! 30-user job for 3 × 120 s). It is read as the window. `max_server_delay_secs` stays the upper
//! bound of any wait, for a window configured longer. A token is refreshed at least daily
//! whatever the target claims. A value beyond its bound is logged as a warning with the raw
//! value once per distinct value (the first `MAX_WARNED` of them; past that, at most once a
//! minute per kind), so a target that always sends it does not flood the log.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The default of `target.max_server_delay_secs`: the cap on `Retry-After` and
/// `inin-ratelimit-reset`.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(120);
/// The default of `target.rate_limit_window_secs`: Genesys' rate-limit window.
pub const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(60);
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Counts above this are not believable (and not exact in an f64).
const MAX_COUNT: u64 = 1 << 53;
/// Distinct raw values remembered for "logged once"; beyond, warnings are rate-limited.
const MAX_WARNED: usize = 64;
/// Past `MAX_WARNED` values, at most one warning per kind this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How long the target may make rolesync wait (`target.rate_limit_window_secs`,
/// `target.max_server_delay_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitBounds {
    /// A wait asked beyond the window is read as the window.
    pub window: Duration,
    /// No wait is longer, whatever the window.
    pub max: Duration,
}

impl WaitBounds {
    pub const DEFAULT: WaitBounds = WaitBounds {
        window: RATE_LIMIT_WINDOW,
        max: MAX_SERVER_DELAY,
    };

    /// The longest wait taken.
    pub fn limit(&self) -> Duration {
        self.window.min(self.max)
    }
}

/// The kinds of values bounded, each with its own warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    RetryAfter,
    RatelimitReset,
    TokenTtl,
    RatelimitCount,
}

/// Raw values already warned about, and when each kind last warned past `MAX_WARNED`.
#[derive(Default)]
struct Warned {
    seen: HashSet<(Kind, String)>,
    last_overflow: [Option<Instant>; 4],
}

impl Warned {
    /// Whether a warning for this raw value is due: its first time, or past `MAX_WARNED`
    /// distinct values, once per `WARN_EVERY` per kind.
    fn due(&mut self, kind: Kind, raw: &str) -> bool {
        let key = (kind, raw.to_owned());
        if self.seen.contains(&key) {
            return false;
        }
        if self.seen.len() < MAX_WARNED {
            self.seen.insert(key);
            return true;
        }
        let last = &mut self.last_overflow[kind as usize];
        if last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// One record for the process: a value is warned about once whichever client saw it.
static WARNED: Mutex<Option<Warned>> = Mutex::new(None);

fn warning_due(kind: Kind, raw: &str) -> bool {
    let mut guard = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(Warned::default).due(kind, raw)
}

fn warn_bounded(kind: Kind, raw: &str, used: Option<Duration>, why: &'static str) {
    let raw: String = raw.chars().take(64).collect();
    if warning_due(kind, &raw) {
        tracing::warn!(
            value.kind = ?kind,
            value.raw = %raw,
            value.used_secs = used.map(|d| d.as_secs_f64()),
            "{why} (logged once per distinct value)"
        );
    }
}

/// Seconds as a non-negative number: an integer of any size, or a decimal. `None` for anything
/// else (negative, NaN, text).
fn seconds(raw: &str) -> Option<f64> {
    let t = raw.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Some(n as f64);
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Some(f),
        // Digits too long for u64 still mean "very large".
        _ if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => Some(f64::INFINITY),
        _ => None,
    }
}

fn clamp(kind: Kind, raw: &str, secs: f64, lo: Duration, hi: Duration) -> Duration {
    if secs > hi.as_secs_f64() {
        warn_bounded(
            kind,
            raw,
            Some(hi),
            "the target sent a value beyond its bound; clamped",
        );
        return hi;
    }
    Duration::from_secs_f64(secs).max(lo)
}

/// A wait the target asks for, `lo` to `bounds.limit()`: beyond the window it is the window
/// (logged as such), and never beyond `bounds.max`.
fn wait(kind: Kind, raw: &str, wanted: Duration, lo: Duration, bounds: WaitBounds) -> Duration {
    let limit = bounds.limit();
    if wanted <= limit {
        return wanted.max(lo.min(limit));
    }
    let why = if bounds.window < bounds.max {
        "the target asked for a wait beyond its rate-limit window (target.rate_limit_window_secs); waiting the window"
    } else {
        "the target asked for a wait beyond target.max_server_delay_secs; clamped"
    };
    warn_bounded(kind, raw, Some(limit), why);
    limit
}

/// Seconds as a duration, saturating (infinite or huge values become `Duration::MAX`).
fn duration_of(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// `Retry-After`: delta-seconds or an HTTP date, 0 to `bounds.limit()`.
pub fn retry_after(raw: &str, bounds: WaitBounds) -> Option<Duration> {
    if let Some(secs) = seconds(raw) {
        return Some(wait(
            Kind::RetryAfter,
            raw,
            duration_of(secs),
            Duration::ZERO,
            bounds,
        ));
    }
    let at = httpdate::parse_http_date(raw.trim()).ok()?;
    let d = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(wait(Kind::RetryAfter, raw, d, Duration::ZERO, bounds))
}

/// `inin-ratelimit-reset`: seconds until the window reopens, 1 s to `bounds.limit()`.
pub fn ratelimit_reset(raw: &str, bounds: WaitBounds) -> Option<Duration> {
    let secs = seconds(raw)?;
    Some(wait(
        Kind::RatelimitReset,
        raw,
        duration_of(secs),
        Duration::from_secs(1),
        bounds,
    ))
}

/// `inin-ratelimit-allowed` / `-count`: a whole number up to 2^53, else ignored.
pub fn ratelimit_count(raw: &str) -> Option<u64> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n <= MAX_COUNT => Some(n),
        _ => {
            warn_bounded(
                Kind::RatelimitCount,
                raw,
                None,
                "the target sent a count beyond belief; ignored",
            );
            None
        }
    }
}

/// A token's `expires_in` as the JSON answer gave it (any number, or absent): the lifetime to
/// assume, `MIN_TOKEN_TTL` to `MAX_TOKEN_TTL`.
pub fn token_ttl(expires_in: Option<&serde_json::Value>) -> Duration {
    let Some(v) = expires_in else {
        return DEFAULT_TOKEN_TTL;
    };
    let raw = v.to_string();
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        serde_json::Value::String(s) => seconds(s),
        _ => None,
    };
    match secs {
        Some(s) if s >= 0.0 => clamp(Kind::TokenTtl, &raw, s, MIN_TOKEN_TTL, MAX_TOKEN_TTL),
        _ => {
            warn_bounded(
                Kind::TokenTtl,
                &raw,
                Some(DEFAULT_TOKEN_TTL),
                "the token's expires_in is not a number of seconds; assumed",
            );
            DEFAULT_TOKEN_TTL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: WaitBounds = WaitBounds::DEFAULT;

    #[test]
    fn waits_beyond_the_window_are_the_window() {
        let window = RATE_LIMIT_WINDOW;
        assert_eq!(ratelimit_reset("18446744073709551615", D), Some(window));
        assert_eq!(
            ratelimit_reset("99999999999999999999999999", D),
            Some(window)
        );
        assert_eq!(ratelimit_reset("61", D), Some(window));
        assert_eq!(ratelimit_reset("59", D), Some(Duration::from_secs(59)));
        assert_eq!(ratelimit_reset("0", D), Some(Duration::from_secs(1)));
        assert_eq!(ratelimit_reset("-5", D), None);
        assert_eq!(retry_after("1e300", D), Some(window));
        assert_eq!(retry_after("99999999999", D), Some(window));
        assert_eq!(retry_after("7", D), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("0.5", D), Some(Duration::from_millis(500)));
        assert_eq!(retry_after("soon", D), None);
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(retry_after(&later, D), Some(window));
        assert_eq!(ratelimit_count("18446744073709551615"), None);
        assert_eq!(ratelimit_count("300"), Some(300));
    }

    #[test]
    fn max_server_delay_stays_the_upper_bound() {
        // A window configured longer than the cap: the cap wins.
        let long = WaitBounds {
            window: Duration::from_secs(600),
            max: Duration::from_secs(120),
        };
        assert_eq!(ratelimit_reset("300", long), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("18446744073709551615", long),
            Some(Duration::from_secs(120))
        );
        // A short window (the tests' 2 s).
        let short = WaitBounds {
            window: Duration::from_secs(2),
            max: MAX_SERVER_DELAY,
        };
        assert_eq!(
            ratelimit_reset("18446744073709551615", short),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_after("1", short), Some(Duration::from_secs(1)));
    }

    #[test]
    fn each_distinct_value_is_warned_about_once() {
        // A record of its own: the process's is shared with every other test.
        let mut w = Warned::default();
        let raw = "18446744073709551615";
        assert!(w.due(Kind::RatelimitReset, raw));
        assert!(!w.due(Kind::RatelimitReset, raw), "the same value again");
        assert!(w.due(Kind::RatelimitReset, "99999"), "another value");
        assert!(
            w.due(Kind::RetryAfter, raw),
            "another kind is another value"
        );
        // Past MAX_WARNED distinct values, one more per kind per WARN_EVERY.
        let mut due = 0;
        for i in 0..(MAX_WARNED * 2) {
            if w.due(Kind::TokenTtl, &format!("flood-{i}")) {
                due += 1;
            }
        }
        assert_eq!(due, MAX_WARNED - 3 + 1);
        assert!(!w.due(Kind::TokenTtl, "one more"));
        assert!(w.due(Kind::RetryAfter, "another kind, rate-limited apart"));
    }

    #[test]
    fn token_lifetimes_stay_between_the_bounds() {
        let ttl = |v: serde_json::Value| token_ttl(Some(&v));
        assert_eq!(
            ttl(serde_json::json!(18446744073709551615u64)),
            MAX_TOKEN_TTL
        );
        assert_eq!(ttl(serde_json::json!(1e300)), MAX_TOKEN_TTL);
        assert_eq!(ttl(serde_json::json!(-1)), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(serde_json::json!("abc")), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(serde_json::json!(0)), MIN_TOKEN_TTL);
        assert_eq!(ttl(serde_json::json!(86_399)), Duration::from_secs(86_399));
        assert_eq!(token_ttl(None), DEFAULT_TOKEN_TTL);
    }

    proptest! {
        #[test]
        fn no_text_panics_or_escapes_its_bound(raw in ".{0,40}") {
            if let Some(d) = retry_after(&raw, D) { prop_assert!(d <= RATE_LIMIT_WINDOW); }
            if let Some(d) = ratelimit_reset(&raw, D) { prop_assert!(d <= RATE_LIMIT_WINDOW); }
            let _ = ratelimit_count(&raw);
            let d = token_ttl(Some(&serde_json::Value::String(raw)));
            prop_assert!(d >= MIN_TOKEN_TTL && d <= MAX_TOKEN_TTL);
        }

        #[test]
        fn any_number_of_seconds_is_bounded(n in any::<u64>(), f in any::<f64>()) {
            let d = ratelimit_reset(&n.to_string(), D);
            prop_assert!(d.is_some_and(|d| d >= Duration::from_secs(1) && d <= RATE_LIMIT_WINDOW));
            let d = token_ttl(Some(&serde_json::json!(f)));
            prop_assert!(d >= MIN_TOKEN_TTL && d <= MAX_TOKEN_TTL);
        }
    }
}
