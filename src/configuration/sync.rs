//! `[sync]`: chunking, reads, and when failures pause a job or fail a user.

use super::{ConfigError, Settings, invalid};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    pub chunk_size: usize,
    /// Re-read-and-retry rounds for a user whose ETag went stale.
    pub max_conflict_retries: u32,
    /// How current roles are read: `auto` (count the calls of each way and take the cheaper),
    /// `lookup` (one `externalId eq` filter per user) or `scan` (page through the directory).
    #[serde(default)]
    pub read_strategy: ReadStrategy,
    /// A directory snapshot older than this is not used; its chunks look users up instead.
    #[serde(default = "default_snapshot_max_age_secs")]
    pub snapshot_max_age_secs: u64,
    /// With `target.write_api = "authorization"`: a user id seen (by a scan or a lookup) this
    /// recently for an externalId is used to read that user's grants without a SCIM read.
    #[serde(default = "default_user_id_max_age_secs")]
    pub user_id_max_age_secs: u64,
    /// `paused_reason = "error_ratio"`: when more than this share of a job's latest users
    /// failed on a per-user target error (a 4xx other than 401, 403, 404 and version
    /// conflicts, or an answer that cannot be understood), the chunk is given back uncommitted
    /// and the job pauses for a cool-down. `1.0` turns the check off (a share cannot exceed 1).
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: f64,
    /// The share is judged over at least this many users: the chunk's own, completed by the
    /// job's latest committed ones. A job with fewer users never pauses for it.
    #[serde(default = "default_error_ratio_window")]
    pub error_ratio_window: usize,
    /// Cool-down of the first `error_ratio` pause of a job; it doubles at each further one.
    #[serde(default = "default_error_ratio_cooldown_secs")]
    pub error_ratio_cooldown_secs: u64,
    /// Upper bound of the doubling cool-down.
    #[serde(default = "default_error_ratio_cooldown_max_secs")]
    pub error_ratio_cooldown_max_secs: u64,
    /// After this many `error_ratio` pauses of one job, its failures are committed (rows
    /// `failed`, `scim_rejected`) instead of pausing again, so a job never loops forever.
    /// 0 never pauses.
    #[serde(default = "default_error_ratio_max_pauses")]
    pub error_ratio_max_pauses: u32,
    /// Chunk runs in which one user may fail for a reason that may pass (5xx, time-outs after
    /// the call's own retries) before the user is `failed` with `retries_exhausted`.
    #[serde(default = "default_max_user_attempts")]
    pub max_user_attempts: u32,
    /// Runs of one chunk before its still-pending rows are `failed` with `retries_exhausted`
    /// (pauses of the whole target do not count).
    #[serde(default = "default_max_chunk_attempts")]
    pub max_chunk_attempts: u32,
    /// The target is declared unavailable (jobs pause) only when this many distinct users
    /// failed for a reason that may pass within `outage_window_secs`, with no success between.
    #[serde(default = "default_outage_min_users")]
    pub outage_min_users: usize,
    #[serde(default = "default_outage_window_secs")]
    pub outage_window_secs: u64,
    /// A joiner not yet in the target (its account not made yet by the identity provider)
    /// waits this long for it, looked up again on a backoff, before its rows end `not_found`.
    /// 0: no wait (`not_found` at once).
    #[serde(default = "default_await_user_secs")]
    pub await_user_secs: u64,
    /// The first wait between lookups of a joiner awaiting their account; it doubles on each
    /// lookup up to `await_user_max_retry_secs`.
    #[serde(default = "default_await_user_first_retry_secs")]
    pub await_user_first_retry_secs: u64,
    #[serde(default = "default_await_user_max_retry_secs")]
    pub await_user_max_retry_secs: u64,
}

/// A day: identity providers commonly create accounts in a nightly batch, and HR sends a
/// hire the day before the start date; a day covers one missed batch run.
fn default_await_user_secs() -> u64 {
    86_400
}

fn default_await_user_first_retry_secs() -> u64 {
    30
}

fn default_await_user_max_retry_secs() -> u64 {
    900
}

fn default_snapshot_max_age_secs() -> u64 {
    900
}

fn default_user_id_max_age_secs() -> u64 {
    7 * 24 * 3600
}

fn default_max_user_attempts() -> u32 {
    3
}

fn default_max_chunk_attempts() -> u32 {
    10
}

fn default_outage_min_users() -> usize {
    3
}

fn default_outage_window_secs() -> u64 {
    60
}

fn default_max_error_ratio() -> f64 {
    0.5
}

fn default_error_ratio_window() -> usize {
    20
}

fn default_error_ratio_cooldown_secs() -> u64 {
    30
}

fn default_error_ratio_cooldown_max_secs() -> u64 {
    600
}

fn default_error_ratio_max_pauses() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadStrategy {
    #[default]
    Auto,
    Lookup,
    Scan,
}

impl Settings {
    /// `sync.*`: chunking, conflict retries and the error-ratio pause.
    pub(super) fn check_sync(&self) -> Result<(), ConfigError> {
        if self.sync.chunk_size == 0 || self.sync.chunk_size > 10_000 {
            return Err(invalid("sync.chunk_size", "must be between 1 and 10000"));
        }
        if self.sync.max_conflict_retries > 20 {
            return Err(invalid("sync.max_conflict_retries", "must be at most 20"));
        }
        // Above 0: at 0 a single refused user would pause the job, while a 400 on one user
        // must fail that user, not the job.
        let ratio = self.sync.max_error_ratio;
        if ratio.is_nan() || ratio <= 0.0 || ratio > 1.0 {
            return Err(invalid(
                "sync.max_error_ratio",
                "must be above 0 and at most 1 (1 turns the check off)",
            ));
        }
        if !(1..=10_000).contains(&self.sync.error_ratio_window) {
            return Err(invalid(
                "sync.error_ratio_window",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=86_400).contains(&self.sync.error_ratio_cooldown_secs) {
            return Err(invalid(
                "sync.error_ratio_cooldown_secs",
                "must be between 1 and 86400",
            ));
        }
        if self.sync.error_ratio_cooldown_max_secs < self.sync.error_ratio_cooldown_secs
            || self.sync.error_ratio_cooldown_max_secs > 86_400
        {
            return Err(invalid(
                "sync.error_ratio_cooldown_max_secs",
                "must be between error_ratio_cooldown_secs and 86400",
            ));
        }
        if !(1..=20).contains(&self.sync.max_user_attempts) {
            return Err(invalid(
                "sync.max_user_attempts",
                "must be between 1 and 20",
            ));
        }
        if !(1..=100).contains(&self.sync.max_chunk_attempts) {
            return Err(invalid(
                "sync.max_chunk_attempts",
                "must be between 1 and 100",
            ));
        }
        if self.sync.await_user_secs > 30 * 86_400 {
            return Err(invalid(
                "sync.await_user_secs",
                "must be between 0 and 2592000 (30 days)",
            ));
        }
        if !(1..=86_400).contains(&self.sync.await_user_first_retry_secs) {
            return Err(invalid(
                "sync.await_user_first_retry_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(self.sync.await_user_first_retry_secs..=86_400)
            .contains(&self.sync.await_user_max_retry_secs)
        {
            return Err(invalid(
                "sync.await_user_max_retry_secs",
                "must be between await_user_first_retry_secs and 86400",
            ));
        }
        if !(1..=1000).contains(&self.sync.outage_min_users) {
            return Err(invalid(
                "sync.outage_min_users",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=3600).contains(&self.sync.outage_window_secs) {
            return Err(invalid(
                "sync.outage_window_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.sync.error_ratio_max_pauses > 100 {
            return Err(invalid(
                "sync.error_ratio_max_pauses",
                "must be at most 100",
            ));
        }
        Ok(())
    }
}
