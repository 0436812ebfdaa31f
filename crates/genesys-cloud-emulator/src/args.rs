//! The emulator's flags (`rolesync emulator --help`) and the two server profiles it can play.

use std::net::SocketAddr;

/// Flags of the emulator (`rolesync emulator`, or `EmulatorArgs::default()` in Rust).
#[derive(clap::Args, Clone, Debug)]
pub struct EmulatorArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub bind: SocketAddr,
    #[arg(long, default_value = "rolesync-dev")]
    pub client_id: String,
    #[arg(long, default_value = "rolesync-dev-secret")]
    pub client_secret: String,
    /// Seed N users: externalId EMP-000001…, userName emp-000001@example.com, roles [Employee].
    #[arg(long, default_value_t = 0)]
    pub users: u64,
    /// Requests per minute per token; 0 turns the limit off.
    #[arg(long, default_value_t = 300)]
    pub rate_limit_per_minute: u64,
    #[arg(long, default_value_t = 86_400)]
    pub token_ttl_secs: u64,
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Probability (0..1) that an API call answers 503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Probability (0..1) that an API call answers 429.
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum, default_value_t = Profile::Genesys)]
    pub profile: Profile,
    /// Role catalog served by `GET /api/v2/authorization/roles` (JSON); the built-in one
    /// matches `config/policy.toml`.
    #[arg(long)]
    pub roles_file: Option<std::path::PathBuf>,
    /// Random extra latency, 0..=N ms, added to every API call.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Probability (0..1) that the server closes the connection of an API call without answering.
    #[arg(long, default_value_t = 0.0)]
    pub drop_connection: f64,
    /// Most subject ids one bulk grant call takes (`POST /api/v2/authorization/roles/{id}`
    /// `subjectIds`, `PUT …/users/remove`); more answers 400. Genesys publishes no cap.
    #[arg(long, default_value_t = 500)]
    pub bulk_max_subjects: usize,
    /// Largest `pageSize` of `GET /api/v2/authorization/divisions/{id}/grants` (Genesys: 500);
    /// more answers 400.
    #[arg(long, default_value_t = 500)]
    pub grant_page_size_max: usize,
}

impl Default for EmulatorArgs {
    fn default() -> Self {
        EmulatorArgs {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_id: "rolesync-dev".into(),
            client_secret: "rolesync-dev-secret".into(),
            users: 0,
            rate_limit_per_minute: 300,
            token_ttl_secs: 86_400,
            latency_ms: 0,
            fault_5xx: 0.0,
            fault_429: 0.0,
            seed: None,
            profile: Profile::Genesys,
            roles_file: None,
            latency_jitter_ms: 0,
            drop_connection: 0.0,
            bulk_max_subjects: 500,
            grant_page_size_max: 500,
        }
    }
}

/// Which server the emulator behaves like.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Genesys Cloud: strong `"n"` ETags, 409 on a stale If-Match, PATCH answers 200 with the user.
    #[default]
    Genesys,
    /// Plain RFC 7644: weak `W/"n"` ETags, 412 on a stale If-Match, PATCH may answer 204.
    Rfc7644,
}

impl Profile {
    /// `filter.maxResults` of the ServiceProviderConfig, and the page size a list is capped at.
    pub fn max_results(self) -> usize {
        match self {
            Profile::Genesys => 100,
            Profile::Rfc7644 => 200,
        }
    }
}
