//! Numbers the target sends back, read without panic or overflow and clamped to bounds.
//!
//! A durations from the target decides how long rolesync waits; a broken or hostile value
//! (`inin-ratelimit-reset: 18446744073709551615`, `expires_in: 1e30`) must neither panic on
//! `Instant + huge` nor park the sync for ever. Every such value goes through this module:
//!
//! | value | accepted | beyond it |
//! |---|---|---|
//! | `Retry-After` (seconds or HTTP date) | 0 to `target.max_server_delay_secs` (120 s) | clamped |
//! | `inin-ratelimit-reset` (seconds) | 1 to `target.max_server_delay_secs` (120 s) | clamped |
//! | token `expires_in` (seconds) | `MIN_TOKEN_TTL` (1 s) to `MAX_TOKEN_TTL` (24 h) | clamped; absent or not a number: 3600 s |
//! | `inin-ratelimit-allowed` / `-count` | 0 to 2^53 | ignored |
//!
//! Genesys' rate-limit window is one minute, so no honest `Retry-After` or reset exceeds it; 120 s
//! leaves room for clock skew. A token is refreshed at least daily whatever the target claims.
//! A value beyond its bound is logged once per kind and process as a warning with the raw
//! value (then silently clamped, so a target that always sends it does not flood the log).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// The default of `target.max_server_delay_secs`: the cap on `Retry-After` and
/// `inin-ratelimit-reset`.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(120);
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Counts above this are not believable (and not exact in an f64).
const MAX_COUNT: u64 = 1 << 53;

/// The kinds of values clamped, each warned about once.
#[derive(Clone, Copy, Debug)]
enum Kind {
    RetryAfter,
    RatelimitReset,
    TokenTtl,
    RatelimitCount,
}

static WARNED: [AtomicBool; 4] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

fn warn_once(kind: Kind, raw: &str, used: Option<Duration>) {
    if !WARNED[kind as usize].swap(true, Ordering::Relaxed) {
        let raw: String = raw.chars().take(64).collect();
        tracing::warn!(
            value.kind = ?kind,
            value.raw = %raw,
            value.used_secs = used.map(|d| d.as_secs_f64()),
            "the target sent a value beyond its bound; clamped (logged once per kind)"
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
        warn_once(kind, raw, Some(hi));
        return hi;
    }
    Duration::from_secs_f64(secs).max(lo)
}

/// `Retry-After`: delta-seconds or an HTTP date, at most `cap`.
pub fn retry_after(raw: &str, cap: Duration) -> Option<Duration> {
    if let Some(secs) = seconds(raw) {
        return Some(clamp(Kind::RetryAfter, raw, secs, Duration::ZERO, cap));
    }
    let at = httpdate::parse_http_date(raw.trim()).ok()?;
    let d = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    if d > cap {
        warn_once(Kind::RetryAfter, raw, Some(cap));
    }
    Some(d.min(cap))
}

/// `inin-ratelimit-reset`: seconds until the window reopens, 1 s to `cap`.
pub fn ratelimit_reset(raw: &str, cap: Duration) -> Option<Duration> {
    let secs = seconds(raw)?;
    Some(clamp(
        Kind::RatelimitReset,
        raw,
        secs,
        Duration::from_secs(1).min(cap),
        cap,
    ))
}

/// `inin-ratelimit-allowed` / `-count`: a whole number up to 2^53, else ignored.
pub fn ratelimit_count(raw: &str) -> Option<u64> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n <= MAX_COUNT => Some(n),
        _ => {
            warn_once(Kind::RatelimitCount, raw, None);
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
            warn_once(Kind::TokenTtl, &raw, Some(DEFAULT_TOKEN_TTL));
            DEFAULT_TOKEN_TTL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn huge_values_are_clamped_not_trusted() {
        assert_eq!(
            ratelimit_reset("18446744073709551615", MAX_SERVER_DELAY),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            ratelimit_reset("99999999999999999999999999", MAX_SERVER_DELAY),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            ratelimit_reset("0", MAX_SERVER_DELAY),
            Some(Duration::from_secs(1))
        );
        assert_eq!(ratelimit_reset("-5", MAX_SERVER_DELAY), None);
        assert_eq!(
            retry_after("1e300", MAX_SERVER_DELAY),
            Some(MAX_SERVER_DELAY)
        );
        let five = Duration::from_secs(5);
        assert_eq!(retry_after("99999999999", five), Some(five));
        assert_eq!(
            retry_after("7", MAX_SERVER_DELAY),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("0.5", MAX_SERVER_DELAY),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retry_after("soon", MAX_SERVER_DELAY), None);
        assert_eq!(ratelimit_count("18446744073709551615"), None);
        assert_eq!(ratelimit_count("300"), Some(300));
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
            if let Some(d) = retry_after(&raw, MAX_SERVER_DELAY) { prop_assert!(d <= MAX_SERVER_DELAY); }
            if let Some(d) = ratelimit_reset(&raw, MAX_SERVER_DELAY) { prop_assert!(d <= MAX_SERVER_DELAY); }
            let _ = ratelimit_count(&raw);
            let d = token_ttl(Some(&serde_json::Value::String(raw)));
            prop_assert!(d >= MIN_TOKEN_TTL && d <= MAX_TOKEN_TTL);
        }

        #[test]
        fn any_number_of_seconds_is_bounded(n in any::<u64>(), f in any::<f64>()) {
            let d = ratelimit_reset(&n.to_string(), MAX_SERVER_DELAY);
            prop_assert!(d.is_some_and(|d| d >= Duration::from_secs(1) && d <= MAX_SERVER_DELAY));
            let d = token_ttl(Some(&serde_json::json!(f)));
            prop_assert!(d >= MIN_TOKEN_TTL && d <= MAX_TOKEN_TTL);
        }
    }
}
