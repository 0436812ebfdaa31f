//! An in-memory Genesys Cloud org: OAuth client credentials, the SCIM user endpoints (both path
//! families), SCIM discovery, the authorization role catalog, the per-token rate limit with its
//! `inin-ratelimit-*` headers, both error shapes, and faults on demand. rolesync's demo, tests
//! and benchmarks run against it; anyone writing a Genesys Cloud SCIM client can too.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let handle = genesys_cloud_emulator::spawn(genesys_cloud_emulator::EmulatorArgs::default()).await?;
//! println!("serving on {}", handle.base_url());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Request path: one middleware, `admin::observe` (`inin-correlation-id` on every response;
//! stats for all but `/emulator/*`), which sends API calls (`/api/…` routes) through
//! `ratelimit::guard` (bearer token, a staged header override, rate limit, then
//! `faults::inject`: latency, forbid, outage, dropped connection, 503, 429, reject_patch) →
//! handler (`routes.rs`; the SCIM user handlers check the named failing users of `staged.rs`
//! first). Before routing, the resource segment of SCIM paths is lower-cased, so `/Users`,
//! `/ServiceProviderConfig`, `/Schemas` and `/ResourceTypes` (RFC spelling) reach the Genesys
//! routes (`/users`, …). What it models of Genesys Cloud, and where it had to choose, is in this
//! crate's README.

mod admin;
mod args;
mod audit_api;
mod audit_trail;
mod authz;
mod discovery;
mod errors;
mod faults;
mod filter;
mod oauth;
#[cfg(test)]
mod parser_props;
mod patch;
mod permissions;
mod ratelimit;
mod roles;
mod routes;
mod scim;
mod staged;
mod state;
mod user;
mod writes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;

pub use args::{EmulatorArgs, Profile};

use faults::FaultSettings;
use roles::Catalog;
pub use roles::DEFAULT_ROLES_JSON;

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

/// The org and the emulator's knobs, shared by every handler.
pub(crate) struct Emulator {
    pub args: EmulatorArgs,
    pub profile: Profile,
    pub catalog: Catalog,
    pub users: state::Directory,
    pub tokens: ratelimit::Tokens,
    pub faults: faults::Faults,
    pub stats: admin::Stats,
    /// The accepted role writes (`GET /emulator/writes`).
    pub writes: writes::WriteLog,
    /// The org's one division, where every grant lives (`authz.rs`).
    pub home_division: authz::Division,
    /// The audit API's async query executions and knobs (`audit_api.rs`); the trail itself
    /// is kept beside the write log (`writes.trail`).
    pub audits: audit_api::Audits,
}

pub(crate) type Shared = Arc<Emulator>;

fn check_probability(name: &str, p: f64) -> anyhow::Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        anyhow::bail!("--{name} must be a probability between 0 and 1, not {p}")
    }
}

impl Emulator {
    pub(crate) fn new(args: EmulatorArgs) -> anyhow::Result<Emulator> {
        check_probability("fault-5xx", args.fault_5xx)?;
        check_probability("fault-429", args.fault_429)?;
        check_probability("drop-connection", args.drop_connection)?;
        args::check_clients(&args)?;
        let catalog = Catalog::load(args.roles_file.as_deref())?;
        let faults = faults::Faults::new(
            FaultSettings {
                fault_5xx: args.fault_5xx,
                fault_429: args.fault_429,
                drop_connection: args.drop_connection,
                latency_ms: args.latency_ms,
                latency_jitter_ms: args.latency_jitter_ms,
                rate_limit_per_minute: args.rate_limit_per_minute,
                reject_patch: 0.0,
            },
            args.seed,
        );
        let emulator = Emulator {
            profile: args.profile,
            catalog,
            users: state::Directory::new(),
            tokens: ratelimit::Tokens::default(),
            faults,
            stats: admin::Stats::default(),
            writes: writes::WriteLog::default(),
            home_division: authz::Division::home(),
            audits: audit_api::Audits::default(),
            args,
        };
        emulator.seed_users(emulator.args.users)?;
        Ok(emulator)
    }

    /// `--users N`: externalId `EMP-000001`…, userName `emp-000001@example.com`, roles `[Employee]`.
    fn seed_users(&self, n: u64) -> anyhow::Result<()> {
        for i in 1..=n {
            let data = user::UserData {
                user_name: format!("emp-{i:06}@example.com"),
                external_id: Some(format!("EMP-{i:06}")),
                display_name: Some(format!("Employee {i:06}")),
                active: true,
                roles: std::collections::BTreeSet::from([roles::EMPLOYEE.to_string()]),
                attrs: serde_json::Map::new(),
            };
            self.users
                .create(data, None)
                .map_err(|e| anyhow::anyhow!("seeding user {i}: {e:?}"))?;
        }
        Ok(())
    }
}

/// Binds `args.bind` (port 0 picks a free port) and serves until `shutdown` is called.
pub async fn spawn(args: EmulatorArgs) -> anyhow::Result<EmulatorHandle> {
    let bind = args.bind;
    // Seeding 100 000 users takes a moment: keep it off the async workers.
    let emulator = tokio::task::spawn_blocking(move || Emulator::new(args)).await??;
    let shared: Shared = Arc::new(emulator);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = tower::ServiceBuilder::new()
        .map_request(routes::normalise_scim_path)
        .service(routes::router(shared));
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        let service = axum::ServiceExt::<Request>::into_make_service(app);
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(error = %e, "emulator server stopped");
        }
    });
    Ok(EmulatorHandle {
        addr,
        shutdown,
        task,
    })
}

// The parsers' tests measure what they allocate (`parser_props`).
#[cfg(test)]
#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;
