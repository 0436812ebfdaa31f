//! `[server]`, `[store]` and `[ingest]`: what the HTTP side accepts and holds, and where it
//! keeps it. Each section's checks sit beside it.

use super::{ConfigError, Settings, invalid};
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: u64,
    /// Largest number of rows in one job.
    pub max_rows_per_job: u64,
    /// Rows waiting to be synced across all jobs above which new jobs get 503.
    pub max_pending_rows: u64,
    /// How long SIGTERM waits for in-flight chunks before releasing them.
    pub shutdown_grace_secs: u64,
    pub request_timeout_secs: u64,
    /// Uploads (`POST /v1/jobs`) one API key may have in progress at once; beyond, 429.
    #[serde(default = "default_max_ingests_per_key")]
    pub max_ingests_per_key: usize,
    /// Uploads in progress at once over all keys; beyond, 503.
    #[serde(default = "default_max_ingests")]
    pub max_ingests: usize,
}

fn default_max_ingests_per_key() -> usize {
    2
}

fn default_max_ingests() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub url: String,
    pub max_connections: u32,
    /// Finished jobs and their rows are deleted after this many days (0 keeps them forever).
    pub retention_days: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_hours: u64,
    /// Work leases: a chunk whose owner stopped heart-beating for this long is claimed again.
    pub lease_secs: u64,
}

/// `[ingest]`: how much one record of a batch may hold, and how far a compressed body may
/// expand. A record or field beyond a bound is rejected as that row (`malformed_row`) or, when
/// the reader cannot find where the record ends without buffering it, refused with a 400 that
/// names its line. Either way what the reader holds is bounded by these figures, not by the body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// The largest record: a CSV record (quoted line breaks included), an NDJSON line, one
    /// element of a JSON envelope's `assignments`.
    pub max_record_bytes: u64,
    /// The largest `role_template` or `license_tier` (bytes); `external_id` has its own limit
    /// (256 characters).
    pub max_field_bytes: usize,
    /// The most fields in one record (CSV columns, keys of a JSON object).
    pub max_fields: usize,
    /// A gzip body may expand at most this many times its compressed size (checked once the
    /// expanded body passes 1 MiB); beyond, 413.
    pub max_expansion_ratio: u64,
    /// The most rows one user may have in one batch; the rows beyond (in line order) are
    /// rejected with `too_many_rows_for_user`.
    pub max_rows_per_user: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_record_bytes: 64 * 1024,
            max_field_bytes: 1024,
            max_fields: 64,
            max_expansion_ratio: 100,
            max_rows_per_user: 1000,
        }
    }
}

impl Settings {
    /// `ingest.*`: every bound at least big enough for a real row, none unbounded.
    pub(super) fn check_ingest(&self) -> Result<(), ConfigError> {
        let i = &self.ingest;
        if !(1024..=16 * 1024 * 1024).contains(&i.max_record_bytes) {
            return Err(invalid(
                "ingest.max_record_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(64..=65536).contains(&i.max_field_bytes) {
            return Err(invalid(
                "ingest.max_field_bytes",
                "must be between 64 and 65536",
            ));
        }
        if !(3..=4096).contains(&i.max_fields) {
            return Err(invalid("ingest.max_fields", "must be between 3 and 4096"));
        }
        if !(2..=100_000).contains(&i.max_expansion_ratio) {
            return Err(invalid(
                "ingest.max_expansion_ratio",
                "must be between 2 and 100000",
            ));
        }
        if !(1..=1_000_000).contains(&i.max_rows_per_user) {
            return Err(invalid(
                "ingest.max_rows_per_user",
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }

    /// `store.*` and `server.*`.
    pub(super) fn check_store_and_server(&self) -> Result<(), ConfigError> {
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "store.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.store.lease_secs < 5 {
            return Err(invalid("store.lease_secs", "must be at least 5"));
        }
        if !(1..=1000).contains(&self.server.max_ingests) {
            return Err(invalid("server.max_ingests", "must be between 1 and 1000"));
        }
        if self.server.max_ingests_per_key == 0
            || self.server.max_ingests_per_key > self.server.max_ingests
        {
            return Err(invalid(
                "server.max_ingests_per_key",
                "must be between 1 and server.max_ingests",
            ));
        }
        if self.server.max_rows_per_job == 0 {
            return Err(invalid("server.max_rows_per_job", "must be at least 1"));
        }
        if self.server.max_pending_rows < self.server.max_rows_per_job {
            // Else a job of the largest size allowed would get 503 for ever.
            return Err(invalid(
                "server.max_pending_rows",
                "must be at least server.max_rows_per_job",
            ));
        }
        Ok(())
    }
}
