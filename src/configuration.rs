//! Settings: built-in defaults → `config/default.toml` → `--config FILE` → environment
//! `ROLESYNC__SECTION__KEY`. Secrets may be given as `*_file` paths. `Settings::load` validates
//! everything and names the offending key; closed vocabularies (scopes, event types, the log
//! format) are typed, so an unknown word is refused at start-up. The keys are listed, with their
//! defaults, in `config/default.toml`. This module imports nothing of rolesync but `domain`.

use crate::domain::{EventType, LogFormat, Mode, Scope, WebhookSecret, WriteApi};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The defaults compiled into the binary, so `rolesync serve` and `demo` run with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub target: TargetSettings,
    pub sync: SyncSettings,
    pub policy: PolicySettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub ingest: IngestSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub reconcile: ReconcileSettings,
}

/// `[reconcile]`: the scheduled reconcile. Off while `schedule` is empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// A cron expression in UTC: 5 fields, or 6 with seconds first.
    #[serde(default)]
    pub schedule: String,
    /// Write the fixes; else each scheduled reconcile is a dry run.
    #[serde(default)]
    pub fix: bool,
    #[serde(default)]
    pub mode: Mode,
}

impl ReconcileSettings {
    /// The schedule, parsed; None when off. Checked at start-up (`Settings::load`), so a
    /// running service only ever sees a valid one.
    pub fn cron(&self) -> Result<Option<croner::Cron>, String> {
        let s = self.schedule.trim();
        if s.is_empty() {
            return Ok(None);
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(s)
            .map(Some)
            .map_err(|e| format!("not a cron expression (5 fields, or 6 with seconds): {e}"))
    }
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub file: PathBuf,
    #[serde(default)]
    pub import_from_target: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub keys: Vec<ApiKeySettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    pub name: String,
    /// Hex SHA-256 of the key: plain keys are never stored.
    pub key_sha256: String,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    #[serde(default)]
    pub endpoints: Vec<WebhookEndpointSettings>,
    /// Delay before each retry, in seconds; its length bounds the attempts.
    #[serde(default = "default_schedule")]
    pub retry_schedule_secs: Vec<u64>,
    /// Bound of one delivery (connect, send, answer); a slower receiver counts as failed.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// Events per POST. 1 (the default) sends each event alone; above 1 every POST is a batch
    /// `{"type":"batch","timestamp":…,"events":[…]}` with its own `webhook-id`.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Deliveries in flight at once per endpoint, so one slow receiver cannot hold up another.
    #[serde(default = "default_concurrency_per_endpoint")]
    pub concurrency_per_endpoint: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            endpoints: Vec::new(),
            retry_schedule_secs: default_schedule(),
            timeout_secs: default_webhook_timeout(),
            batch_max_events: default_batch_max_events(),
            concurrency_per_endpoint: default_concurrency_per_endpoint(),
        }
    }
}

fn default_batch_max_events() -> usize {
    1
}

fn default_concurrency_per_endpoint() -> usize {
    4
}

fn default_schedule() -> Vec<u64> {
    vec![5, 30, 120, 600, 1800, 3600, 7200, 14400]
}

fn default_webhook_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointSettings {
    pub name: Option<String>,
    pub url: String,
    /// The signing secret, `whsec_<base64>`.
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    /// Secrets being rotated out: each delivery carries one signature per secret (the current
    /// one first), space-separated, so receivers verify with either during the rotation.
    #[serde(default)]
    pub previous_secrets: Vec<SecretString>,
    /// Event types sent to this endpoint; all when empty.
    #[serde(default)]
    pub events: Vec<EventType>,
}

impl WebhookEndpointSettings {
    /// The endpoint's key in the outbox, in logs and in the deliveries API: `name`, else the
    /// URL without credentials, query or fragment (which may carry a token).
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match reqwest::Url::parse(&self.url) {
            // Nothing to hide: the URL as written (the key rows were stored under before).
            Ok(u)
                if u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none() =>
            {
                self.url.clone()
            }
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
            Err(_) => "unnamed".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
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

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (protobuf). Off while `otlp_endpoint`
/// is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where spans are POSTed, e.g. `http://otel-collector:4318/v1/traces`; a URL with no path
    /// gets `/v1/traces`. Empty: no traces, and no `traceparent` on outgoing calls.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces kept, 0 to 1; a trace started upstream keeps the caller's decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Bound on one export, retries included, and on the flush at shutdown: an unreachable
    /// collector never holds up the service or its shutdown longer.
    #[serde(default = "default_export_timeout_secs")]
    pub export_timeout_secs: u64,
}

fn default_service_name() -> String {
    "rolesync".to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_export_timeout_secs() -> u64 {
    5
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: String::new(),
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
            export_timeout_secs: default_export_timeout_secs(),
        }
    }
}

impl TelemetrySettings {
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl Settings {
    /// Layers the defaults, `config/default.toml` if present in the working directory, the
    /// given file, and `ROLESYNC__…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::with_name("config/default.toml").required(false));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let builder = builder.add_source(
            config::Environment::with_prefix("ROLESYNC")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        Self::from_config(builder.build()?)
    }

    /// Built-in defaults only, plus overrides given as TOML text (tests, demo).
    pub fn from_toml_overrides(overrides: &str) -> Result<Settings, ConfigError> {
        Self::from_toml_layers(&[overrides])
    }

    /// Built-in defaults, then each TOML text in order, later ones winning.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        for layer in layers {
            builder = builder.add_source(config::File::from_str(layer, config::FileFormat::Toml));
        }
        Self::from_config(builder.build()?)
    }

    fn from_config(c: config::Config) -> Result<Settings, ConfigError> {
        let mut s: Settings = c.try_deserialize()?;
        s.resolve_secret_files()?;
        s.validate()?;
        Ok(s)
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.target.client_secret_file {
            self.target.client_secret = Some(read_secret("target.client_secret_file", path)?);
        }
        if let Some(path) = &self.target.bearer_token_file {
            self.target.bearer_token = Some(read_secret("target.bearer_token_file", path)?);
        }
        for ep in &mut self.webhooks.endpoints {
            if let Some(path) = &ep.secret_file {
                ep.secret = Some(read_secret("webhooks.endpoints.secret_file", path)?);
            }
        }
        Ok(())
    }

    /// Everything serde cannot check by type, section by section; the first problem names its key.
    fn validate(&self) -> Result<(), ConfigError> {
        self.check_store_and_server()?;
        self.check_target()?;
        self.check_sync()?;
        self.check_auth()?;
        self.check_webhooks()?;
        self.check_ingest()?;
        self.check_telemetry()?;
        self.reconcile
            .cron()
            .map_err(|e| invalid("reconcile.schedule", e))?;
        Ok(())
    }

    /// `ingest.*`: every bound at least big enough for a real row, none unbounded.
    fn check_ingest(&self) -> Result<(), ConfigError> {
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

    /// `telemetry.*`: checked whether or not traces are on, so a typo waits for no one.
    fn check_telemetry(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if t.enabled() {
            check_url("telemetry.otlp_endpoint", t.otlp_endpoint.trim())?;
        }
        if t.service_name.trim().is_empty() || t.service_name.len() > 255 {
            return Err(invalid(
                "telemetry.service_name",
                "must be 1 to 255 characters",
            ));
        }
        let ratio = t.sample_ratio;
        if ratio.is_nan() || !(0.0..=1.0).contains(&ratio) {
            return Err(invalid("telemetry.sample_ratio", "must be between 0 and 1"));
        }
        if !(1..=60).contains(&t.export_timeout_secs) {
            return Err(invalid(
                "telemetry.export_timeout_secs",
                "must be between 1 and 60",
            ));
        }
        Ok(())
    }

    /// `store.*` and `server.*`.
    fn check_store_and_server(&self) -> Result<(), ConfigError> {
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

    /// `target.*`: where the target is and how rolesync authenticates to it.
    fn check_target(&self) -> Result<(), ConfigError> {
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

    /// `sync.*`: chunking, conflict retries and the error-ratio pause.
    fn check_sync(&self) -> Result<(), ConfigError> {
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

    /// `auth.keys`: each key a hex SHA-256 (its scopes are typed, checked while reading).
    fn check_auth(&self) -> Result<(), ConfigError> {
        for key in &self.auth.keys {
            let ok =
                key.key_sha256.len() == 64 && key.key_sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(invalid(
                    "auth.keys.key_sha256",
                    format!("key `{}`: not a hex SHA-256", key.name),
                ));
            }
        }
        Ok(())
    }

    /// `webhooks.*`: endpoints with a `whsec_` secret and distinct names, and delivery bounds.
    fn check_webhooks(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for ep in &self.webhooks.endpoints {
            check_url("webhooks.endpoints.url", &ep.url)?;
            let name = ep.display_name();
            match &ep.secret {
                Some(s) if WebhookSecret::parse(s.expose_secret()).is_some() => {}
                _ => {
                    return Err(invalid(
                        "webhooks.endpoints.secret",
                        format!("endpoint {name}: a secret `whsec_<base64>` is required"),
                    ));
                }
            }
            for (i, s) in ep.previous_secrets.iter().enumerate() {
                if WebhookSecret::parse(s.expose_secret()).is_none() {
                    return Err(invalid(
                        "webhooks.endpoints.previous_secrets",
                        format!("endpoint {name}: entry {i} is not a secret `whsec_<base64>`"),
                    ));
                }
            }
            // Deliveries are keyed by endpoint name: two endpoints with one name would share
            // (and steal) each other's deliveries.
            if !names.insert(name.clone()) {
                return Err(invalid(
                    "webhooks.endpoints.name",
                    format!("two endpoints are named {name}; give each a distinct `name`"),
                ));
            }
        }
        if self.webhooks.retry_schedule_secs.len() > 50 {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "at most 50 retries",
            ));
        }
        if self
            .webhooks
            .retry_schedule_secs
            .iter()
            .any(|s| *s == 0 || *s > 7 * 86_400)
        {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "each delay must be between 1 s and 7 days",
            ));
        }
        if !(1..=300).contains(&self.webhooks.timeout_secs) {
            return Err(invalid(
                "webhooks.timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=1000).contains(&self.webhooks.batch_max_events) {
            return Err(invalid(
                "webhooks.batch_max_events",
                "must be between 1 (no batching) and 1000",
            ));
        }
        if !(1..=64).contains(&self.webhooks.concurrency_per_endpoint) {
            return Err(invalid(
                "webhooks.concurrency_per_endpoint",
                "must be between 1 and 64",
            ));
        }
        Ok(())
    }

    /// Base of the Platform API (`…/api/v2`), for the role catalog.
    pub fn api_base(&self) -> String {
        if let Some(b) = &self.target.api_base {
            return b.trim_end_matches('/').to_owned();
        }
        let scim = self.target.scim_base.trim_end_matches('/');
        match scim.find("/api/v2/scim") {
            Some(i) => scim[..i].to_owned(),
            None => scim.to_owned(),
        }
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(invalid(key, format!("`{url}` is not an http(s) URL"))),
    }
}

fn read_secret(key: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(SecretString::from(s.trim().to_owned())),
        Err(e) => Err(invalid(key, format!("cannot read {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn with_webhooks(toml: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml_overrides(toml)
    }

    fn key_of(r: Result<Settings, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            Err(e) => panic!("not a key error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn unknown_words_of_closed_vocabularies_are_refused_naming_the_key() {
        let cases = [
            ("[log]\nformat = \"xml\"\n", "log.format", "`xml`"),
            (
                "[[auth.keys]]\nname = \"k\"\nkey_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nscopes = [\"jobs:read\", \"jobs:delete\"]\n",
                "auth.keys[0]scopes[1]",
                "`jobs:delete`",
            ),
        ];
        for (toml, key, word) in cases {
            let err = with_webhooks(toml)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(key) && err.contains(word), "{toml}: {err}");
        }
        let ok = with_webhooks("[log]\nformat = \"json\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.log.format, LogFormat::Json);
    }

    #[test]
    fn error_ratio_settings_have_defaults_and_are_checked() {
        let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.sync.max_error_ratio, 0.5);
        assert_eq!(s.sync.error_ratio_window, 20);
        assert_eq!(s.sync.error_ratio_cooldown_secs, 30);
        assert_eq!(s.sync.error_ratio_cooldown_max_secs, 600);
        assert_eq!(s.sync.error_ratio_max_pauses, 3);
        assert!(with_webhooks("[sync]\nmax_error_ratio = 1.0\n").is_ok());
        for bad in ["0.0", "1.5", "-0.1"] {
            assert_eq!(
                key_of(with_webhooks(&format!("[sync]\nmax_error_ratio = {bad}\n"))),
                "sync.max_error_ratio"
            );
        }
        assert_eq!(
            key_of(with_webhooks("[sync]\nerror_ratio_window = 0\n")),
            "sync.error_ratio_window"
        );
        assert_eq!(
            key_of(with_webhooks(
                "[sync]\nerror_ratio_cooldown_secs = 60\nerror_ratio_cooldown_max_secs = 30\n"
            )),
            "sync.error_ratio_cooldown_max_secs"
        );
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_keys_are_checked() {
        let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.telemetry.enabled());
        assert_eq!(s.telemetry.service_name, "rolesync");
        assert_eq!(s.telemetry.sample_ratio, 1.0);
        let on = with_webhooks(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.25\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(on.telemetry.enabled());
        for (toml, key) in [
            (
                "otlp_endpoint = \"collector:4318\"",
                "telemetry.otlp_endpoint",
            ),
            ("sample_ratio = 1.5", "telemetry.sample_ratio"),
            ("sample_ratio = -0.1", "telemetry.sample_ratio"),
            ("service_name = \" \"", "telemetry.service_name"),
            ("export_timeout_secs = 0", "telemetry.export_timeout_secs"),
            ("export_timeout_secs = 61", "telemetry.export_timeout_secs"),
        ] {
            assert_eq!(
                key_of(with_webhooks(&format!("[telemetry]\n{toml}\n"))),
                key
            );
        }
        assert!(matches!(
            with_webhooks("[telemetry]\notlp_endpont = \"x\"\n"),
            Err(ConfigError::Load(_))
        ));
    }

    #[test]
    fn webhook_settings_have_safe_defaults() {
        let s = with_webhooks("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.webhooks.batch_max_events, 1, "batching is off by default");
        assert_eq!(s.webhooks.concurrency_per_endpoint, 4);
        assert!(s.webhooks.retry_schedule_secs.iter().sum::<u64>() > 3 * 3600);
    }

    #[test]
    fn rotation_secrets_and_batching_are_read_and_checked() {
        let ok = with_webhooks(&format!(
            "[webhooks]\nbatch_max_events = 50\n[[webhooks.endpoints]]\nurl = \"https://h.example/x?token=abc\"\n\
             secret = \"{SECRET}\"\nprevious_secrets = [\"{SECRET}\"]\nevents = [\"job.finished\"]\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let ep = &ok.webhooks.endpoints[0];
        assert_eq!(ep.previous_secrets.len(), 1);
        assert_eq!(ok.webhooks.batch_max_events, 50);
        // The token in the URL stays out of the name used in logs and the API.
        assert_eq!(ep.display_name(), "https://h.example/x");

        let endpoint = |extra: &str| {
            format!(
                "[[webhooks.endpoints]]\nurl = \"https://h.example/\"\nsecret = \"{SECRET}\"\n{extra}\n"
            )
        };
        assert_eq!(
            key_of(with_webhooks(&endpoint("previous_secrets = [\"nope\"]"))),
            "webhooks.endpoints.previous_secrets"
        );
        // A closed vocabulary is refused while reading, naming the key and the accepted words.
        let err = with_webhooks(&endpoint("events = [\"role_sync.done\"]"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("webhooks.endpoints[0]events[0]")
                && err.contains("`role_sync.done`")
                && err.contains("job.finished"),
            "{err}"
        );
        assert_eq!(
            key_of(with_webhooks(&format!("{}{}", endpoint(""), endpoint("")))),
            "webhooks.endpoints.name"
        );
        assert_eq!(
            key_of(with_webhooks("[webhooks]\nbatch_max_events = 0\n")),
            "webhooks.batch_max_events"
        );
        assert_eq!(
            key_of(with_webhooks("[webhooks]\nretry_schedule_secs = [1, 0]\n")),
            "webhooks.retry_schedule_secs"
        );
        assert_eq!(
            key_of(with_webhooks("[webhooks]\ntimeout_secs = 0\n")),
            "webhooks.timeout_secs"
        );
    }

    #[test]
    fn the_authorization_write_api_is_refused_with_the_rfc7644_profile() {
        assert_eq!(
            key_of(Settings::from_toml_overrides(
                "[target]\nprofile = \"rfc7644\"\nwrite_api = \"authorization\"\n"
            )),
            "target.write_api"
        );
        let ok = Settings::from_toml_overrides("[target]\nwrite_api = \"authorization\"\n");
        assert!(
            ok.is_ok_and(|s| s.target.write_api == WriteApi::Authorization
                && s.target.bulk_max_subjects == 100)
        );
        assert_eq!(
            key_of(Settings::from_toml_overrides(
                "[target]\nbulk_max_subjects = 0\n"
            )),
            "target.bulk_max_subjects"
        );
        let err = Settings::from_toml_overrides("[target]\nwrite_api = \"graph\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("write_api"), "{err}");
    }

    #[test]
    fn the_pending_bound_must_hold_the_largest_job() {
        assert_eq!(
            key_of(Settings::from_toml_overrides(
                "[server]\nmax_rows_per_job = 10\nmax_pending_rows = 9\n"
            )),
            "server.max_pending_rows"
        );
        assert_eq!(
            key_of(Settings::from_toml_overrides(
                "[server]\nmax_rows_per_job = 0\n"
            )),
            "server.max_rows_per_job"
        );
        assert!(
            Settings::from_toml_overrides(
                "[server]\nmax_rows_per_job = 10\nmax_pending_rows = 10\n"
            )
            .is_ok()
        );
    }
}
