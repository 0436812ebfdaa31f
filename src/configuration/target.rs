//! `[target]`: where the SCIM target is, how rolesync authenticates to it, and how it paces
//! and bounds its calls.

use super::check_url;
use super::{ConfigError, Settings, invalid};
use crate::domain::WriteApi;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetProfile {
    #[default]
    Genesys,
    Rfc7644,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    pub profile: TargetProfile,
    /// e.g. `https://api.mypurecloud.com/api/v2/scim/v2`
    pub scim_base: String,
    /// e.g. `https://login.mypurecloud.com/oauth/token`
    pub token_url: Option<String>,
    /// Base of the Platform API for the role catalog; derived from `scim_base` when absent.
    pub api_base: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// A static token instead of client credentials.
    pub bearer_token: Option<SecretString>,
    pub bearer_token_file: Option<PathBuf>,
    pub requests_per_minute: u32,
    pub max_concurrency: usize,
    pub timeout_secs: u64,
    /// Attempts per call for retryable failures (5xx, 408, timeouts); 429s do not count.
    pub max_attempts: u32,
    /// Upper bound of the whole retry sequence of one call.
    pub max_retry_secs: u64,
    /// The longest wait the target can ask for (`Retry-After`, `inin-ratelimit-reset`); a
    /// longer value is clamped to it and logged once (`scim/bounds.rs`).
    #[serde(default = "default_max_server_delay")]
    pub max_server_delay_secs: u64,
    /// The target's rate-limit window (Genesys: one minute). A `Retry-After` or
    /// `inin-ratelimit-reset` longer than it is not a real wait (the window reopens within it):
    /// it is read as the window, and logged (`scim/bounds.rs`). `max_server_delay_secs` still
    /// bounds the result.
    #[serde(default = "default_rate_limit_window")]
    pub rate_limit_window_secs: u64,
    /// Which API writes roles: `scim` (one PATCH per user) or `authorization` (Genesys' bulk
    /// grant endpoints, one call per role per chunk of users; docs/bulk-grants.md). With
    /// `authorization` the planner still picks, per job, whichever path costs fewer calls.
    /// Refused with the `rfc7644` profile, which has no such API.
    #[serde(default)]
    pub write_api: WriteApi,
    /// Most user ids in one bulk grant or remove call (`write_api = "authorization"`).
    #[serde(default = "default_bulk_max_subjects")]
    pub bulk_max_subjects: usize,
}

fn default_bulk_max_subjects() -> usize {
    100
}

/// The largest `target.bulk_max_subjects`: about what fits in Genesys' 512 000-byte request
/// limit is 13 000 ids; 5 000 leaves room.
pub const MAX_BULK_SUBJECTS: usize = 5_000;

fn default_max_server_delay() -> u64 {
    120
}

fn default_rate_limit_window() -> u64 {
    60
}

impl Settings {
    /// `target.*`: where the target is and how rolesync authenticates to it.
    pub(super) fn check_target(&self) -> Result<(), ConfigError> {
        check_url("target.scim_base", &self.target.scim_base)?;
        if let Some(u) = &self.target.token_url {
            check_url("target.token_url", u)?;
        }
        let has_static = self.target.bearer_token.is_some();
        let has_client = self.target.client_id.is_some() && self.target.client_secret.is_some();
        if !has_static && !has_client {
            return Err(invalid(
                "target.client_secret",
                "give client_id and client_secret (or client_secret_file), or bearer_token",
            ));
        }
        if has_client && !has_static && self.target.token_url.is_none() {
            return Err(invalid(
                "target.token_url",
                "required with client credentials",
            ));
        }
        if self.target.requests_per_minute == 0 {
            return Err(invalid("target.requests_per_minute", "must be at least 1"));
        }
        if self.target.max_concurrency == 0 || self.target.max_concurrency > 256 {
            return Err(invalid(
                "target.max_concurrency",
                "must be between 1 and 256",
            ));
        }
        if !(1..=3600).contains(&self.target.max_server_delay_secs) {
            return Err(invalid(
                "target.max_server_delay_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&self.target.rate_limit_window_secs) {
            return Err(invalid(
                "target.rate_limit_window_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.target.max_attempts == 0 || self.target.max_attempts > 20 {
            return Err(invalid("target.max_attempts", "must be between 1 and 20"));
        }
        if self.target.write_api == WriteApi::Authorization
            && self.target.profile == TargetProfile::Rfc7644
        {
            return Err(invalid(
                "target.write_api",
                "\"authorization\" needs the Genesys Authorization API; the rfc7644 profile has none (use \"scim\")",
            ));
        }
        if !(1..=MAX_BULK_SUBJECTS).contains(&self.target.bulk_max_subjects) {
            return Err(invalid(
                "target.bulk_max_subjects",
                format!("must be between 1 and {MAX_BULK_SUBJECTS}"),
            ));
        }
        Ok(())
    }
}
