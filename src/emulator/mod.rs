//! An in-memory Genesys Cloud org (SPEC §5): OAuth, SCIM users, the role catalog, rate limits
//! and faults on demand. The demo, the tests and the benchmarks run against it.

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Flags of `rolesync emulator` (SPEC §5).
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

/// A running emulator. Dropping the handle does not stop it; call `shutdown`.
pub struct EmulatorHandle {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:port`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Binds `args.bind` (port 0 picks a free port) and serves until `shutdown` is called.
pub async fn spawn(args: EmulatorArgs) -> anyhow::Result<EmulatorHandle> {
    let _ = args;
    anyhow::bail!("emulator not built yet")
}
