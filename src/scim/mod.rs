//! The SCIM client for Genesys Cloud (or any RFC 7644 service provider).
//!
//! - `token`: client-credentials OAuth, one refresh in flight, refreshed ahead of expiry.
//! - `rate`: one pacing limiter shared by every worker, corrected by `inin-ratelimit-*`.
//! - `retry`: which failures are retried (429, 408, 5xx, timeouts, connection errors) and how long
//!   to wait (`Retry-After`, else exponential backoff with full jitter).
//! - `client`: the calls rolesync makes, each counted; `tally`: what the calls of one piece
//!   of work share (counts, stop signal, lease).
//! - `bounds`: every number the target sends back (`Retry-After`, `inin-ratelimit-*`, token
//!   `expires_in`) is parsed without panic and clamped there.

pub mod bounds;
pub mod client;
pub mod model;
pub mod rate;
pub mod retry;
pub mod tally;
pub mod token;

use crate::domain::ScimCallOutcome;
pub use client::{AuthzCatalog, ScimClient};
pub use model::ScimUser;
pub use tally::{CallTally, LeaseWindow};

/// Why a SCIM call failed, after retries. Each variant says what the caller should do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScimError {
    /// The ETag is stale (409, 412, or 400 `invalidVers`): re-read and recompute.
    #[error("version conflict")]
    Conflict,
    /// 404: the user does not exist (any more).
    #[error("not found")]
    NotFound,
    /// Another 4xx: the target refused this request; fails this user only.
    #[error("rejected by the target ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    /// 403: the OAuth client lacks a permission; fails the job once.
    #[error("forbidden by the target: {detail}")]
    Forbidden { detail: String },
    /// The token endpoint refused the credentials, or a fresh token still got 401.
    #[error("authentication failed: {detail}")]
    AuthFailed { detail: String },
    /// Retries exhausted on 5xx, 408, timeouts or connection errors: the target is down.
    #[error("target unavailable: {detail}")]
    Unavailable { detail: String },
    /// Retries exhausted on 429s.
    #[error("rate limited for too long")]
    RateLimited,
    /// The answer could not be understood.
    #[error("unexpected answer from the target: {0}")]
    Protocol(String),
    /// Not sent: the caller's work was stopped (`CallTally::stop`) while the call waited.
    #[error("not sent: the work was stopped")]
    Stopped,
}

impl ScimError {
    /// How a call that ended with this error is counted (`rolesync_scim_calls_total`).
    pub fn outcome(&self) -> ScimCallOutcome {
        match self {
            ScimError::Conflict => ScimCallOutcome::Conflict,
            ScimError::NotFound => ScimCallOutcome::NotFound,
            ScimError::Rejected { .. } => ScimCallOutcome::Rejected,
            ScimError::Forbidden { .. } => ScimCallOutcome::Forbidden,
            ScimError::AuthFailed { .. } => ScimCallOutcome::AuthFailed,
            ScimError::Unavailable { .. } => ScimCallOutcome::Unavailable,
            ScimError::RateLimited => ScimCallOutcome::RateLimited,
            ScimError::Protocol(_) => ScimCallOutcome::Protocol,
            ScimError::Stopped => ScimCallOutcome::Stopped,
        }
    }

    /// Errors that concern the whole target rather than one user: the job pauses or fails.
    pub fn is_target_wide(&self) -> bool {
        matches!(
            self,
            ScimError::Forbidden { .. }
                | ScimError::AuthFailed { .. }
                | ScimError::Unavailable { .. }
                | ScimError::RateLimited
        )
    }
}
