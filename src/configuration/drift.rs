//! `[drift]`: how rolesync finds roles changed by hand in Genesys between reconciles: by the
//! scheduled scan of `[reconcile]` alone (`scan`, the default), or also by polling Genesys'
//! audit trail (`audit`), which reads in proportion to what changed (README, Drift).

use super::{ConfigError, Settings, invalid};
use serde::Deserialize;

pub use crate::domain::DriftSource;

/// `[drift]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    #[serde(default)]
    pub source: DriftSource,
    /// Seconds between two polls of the audit trail.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// Correct the drifted users the feed finds (a `reconcile` job over just them); else only
    /// report them.
    #[serde(default)]
    pub fix: bool,
    /// How far behind now a poll's interval ends: room for a delay between a change and its
    /// audit message being queryable (unknown for Genesys; the sandbox check measures it).
    #[serde(default)]
    pub lag_secs: u64,
    /// Most users one poll reads back; more changed users fall back to a full scan (cheaper).
    #[serde(default = "default_max_users")]
    pub max_users_per_poll: usize,
    /// The longest wait between two fallback scans while the feed keeps failing (the wait
    /// doubles from `poll_secs` × 2 up to this).
    #[serde(default = "default_backoff_max")]
    pub fallback_backoff_max_secs: u64,
}

fn default_backoff_max() -> u64 {
    3_600
}

fn default_poll_secs() -> u64 {
    60
}

fn default_max_users() -> usize {
    1_000
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            source: DriftSource::Scan,
            poll_secs: default_poll_secs(),
            fix: false,
            lag_secs: 0,
            max_users_per_poll: default_max_users(),
            fallback_backoff_max_secs: default_backoff_max(),
        }
    }
}

impl Settings {
    /// `drift.*`: bounds; the feed needs rolesync's own OAuth client id to tell its own
    /// changes from hand changes.
    pub(super) fn check_drift(&self) -> Result<(), ConfigError> {
        let d = &self.drift;
        if !(1..=86_400).contains(&d.poll_secs) {
            return Err(invalid("drift.poll_secs", "must be between 1 and 86400"));
        }
        if d.lag_secs > 3_600 {
            return Err(invalid("drift.lag_secs", "must be between 0 and 3600"));
        }
        if !(1..=10_000).contains(&d.max_users_per_poll) {
            return Err(invalid(
                "drift.max_users_per_poll",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=604_800).contains(&d.fallback_backoff_max_secs) {
            return Err(invalid(
                "drift.fallback_backoff_max_secs",
                "must be between 1 and 604800",
            ));
        }
        if d.source == DriftSource::Audit
            && self
                .target
                .client_id
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
        {
            return Err(invalid(
                "drift.source",
                "\"audit\" needs target.client_id (OAuth client credentials): the feed tells rolesync's own changes by its client id",
            ));
        }
        Ok(())
    }
}
