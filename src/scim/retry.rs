//! Retry policy, after vector's HTTP sinks: retry 429, 408, 5xx, timeouts and connection
//! errors; never another 4xx. Delays are exponential with full jitter, unless the target names
//! one (`Retry-After`, in seconds or as an HTTP date).

use rand::Rng;
use reqwest::StatusCode;
use std::time::Duration;

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// 429: wait and resend; does not use up an attempt.
    RateLimited,
    /// 408 or 5xx: wait and resend; uses up an attempt.
    Transient,
}

pub fn classify(status: StatusCode) -> Verdict {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Verdict::RateLimited
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        Verdict::Transient
    } else {
        Verdict::Done
    }
}

/// Full jitter: a uniform delay in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
    let ceiling = exp.min(cap);
    let millis = ceiling.as_millis() as u64;
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Parses `Retry-After`: delta-seconds or an HTTP date, at most the rate-limit window and
/// `target.max_server_delay_secs` (`bounds`).
pub fn parse_retry_after(value: &str, bounds: super::bounds::WaitBounds) -> Option<Duration> {
    super::bounds::retry_after(value, bounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    const CAP: super::super::bounds::WaitBounds = super::super::bounds::WaitBounds::DEFAULT;

    #[test]
    fn retries_only_429_408_and_5xx() {
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Verdict::RateLimited
        );
        assert_eq!(classify(StatusCode::REQUEST_TIMEOUT), Verdict::Transient);
        assert_eq!(classify(StatusCode::BAD_GATEWAY), Verdict::Transient);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Verdict::Transient
        );
        for s in [400, 401, 403, 404, 409, 412, 422] {
            assert_eq!(
                classify(StatusCode::from_u16(s).unwrap_or(StatusCode::OK)),
                Verdict::Done,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7", CAP), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later), CAP).unwrap_or_default();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", CAP),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", CAP), None);
        assert_eq!(parse_retry_after("999999", CAP), Some(CAP.limit()));
    }

    #[test]
    fn backoff_stays_within_the_cap() {
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
            assert!(d <= Duration::from_secs(5));
        }
    }
}
