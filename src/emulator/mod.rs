//! An in-memory Genesys Cloud org (SPEC §5): OAuth, SCIM users, the role catalog, rate limits
//! and faults on demand. The demo, the tests and the benchmarks run against it.
//!
//! Request path: one middleware, `admin::observe` (`inin-correlation-id` on every response;
//! stats for all but `/emulator/*`), which sends API calls (`/api/…` routes) through
//! `ratelimit::guard` (bearer token, rate limit, then `faults::inject`: latency, outage, dropped
//! connection, 503, 429) → handler. Before routing, the resource
//! segment of SCIM paths is lower-cased, so `/Users`, `/ServiceProviderConfig`, `/Schemas` and
//! `/ResourceTypes` (RFC spelling) reach the Genesys routes (`/users`, …). See `docs/emulator.md`.

mod admin;
mod discovery;
mod errors;
mod faults;
mod filter;
mod oauth;
mod patch;
mod ratelimit;
mod roles;
mod scim;
mod state;
mod user;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;

use faults::FaultSettings;
use roles::Catalog;

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
    /// Random extra latency, 0..=N ms, added to every API call.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Probability (0..1) that the server closes the connection of an API call without answering.
    #[arg(long, default_value_t = 0.0)]
    pub drop_connection: f64,
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

/// The org and the emulator's knobs, shared by every handler.
pub(crate) struct Emulator {
    pub args: EmulatorArgs,
    pub profile: Profile,
    pub catalog: Catalog,
    pub users: state::Directory,
    pub tokens: ratelimit::Tokens,
    pub faults: faults::Faults,
    pub stats: admin::Stats,
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
    fn new(args: EmulatorArgs) -> anyhow::Result<Emulator> {
        check_probability("fault-5xx", args.fault_5xx)?;
        check_probability("fault-429", args.fault_429)?;
        check_probability("drop-connection", args.drop_connection)?;
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
                .create(data)
                .map_err(|e| anyhow::anyhow!("seeding user {i}: {e:?}"))?;
        }
        Ok(())
    }
}

/// Lower-cases the resource segment of a SCIM path (`/api/v2/scim/v2/Users/…` →
/// `/api/v2/scim/v2/users/…`) so RFC-spelt paths reach the Genesys routes.
fn normalise_scim_path(mut req: Request) -> Request {
    const RESOURCES: [&str; 5] = [
        "users",
        "serviceproviderconfig",
        "schemas",
        "resourcetypes",
        ".search",
    ];
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/api/v2/scim/v2/")
        .or_else(|| path.strip_prefix("/api/v2/scim/"));
    let Some(rest) = rest else {
        return req;
    };
    let segment = rest.split('/').next().unwrap_or("");
    if segment.chars().all(|c| !c.is_ascii_uppercase())
        || !RESOURCES.iter().any(|r| r.eq_ignore_ascii_case(segment))
    {
        return req;
    }
    let prefix_len = path.len() - rest.len();
    let mut new_path = String::with_capacity(path.len() + 16);
    new_path.push_str(&path[..prefix_len]);
    new_path.push_str(&segment.to_ascii_lowercase());
    new_path.push_str(&rest[segment.len()..]);
    if let Some(q) = req.uri().query() {
        new_path.push('?');
        new_path.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = new_path.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// No route: a SCIM `Error` 404 under the SCIM paths, a Genesys 404 elsewhere.
async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/api/v2/scim") {
        errors::ApiError::scim_not_found(format!("No resource at {}", uri.path())).into_response()
    } else {
        errors::ApiError::genesys(
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested operation failed with status 404",
        )
        .into_response()
    }
}

/// The SCIM routes under `prefix` (registered with their full paths rather than nested: no
/// prefix stripping on every request).
fn scim_routes(router: Router<Shared>, prefix: &str) -> Router<Shared> {
    router
        .route(
            &format!("{prefix}/users"),
            get(scim::list_users).post(scim::create_user),
        )
        .route(
            &format!("{prefix}/users/{{id}}"),
            get(scim::get_user)
                .put(scim::put_user)
                .patch(scim::patch_user)
                .delete(scim::delete_user),
        )
        .route(
            &format!("{prefix}/users/.search"),
            post(scim::search_not_implemented),
        )
        .route(
            &format!("{prefix}/.search"),
            post(scim::search_not_implemented),
        )
        .route(
            &format!("{prefix}/serviceproviderconfig"),
            get(discovery::service_provider_config),
        )
        .route(&format!("{prefix}/schemas"), get(discovery::schemas))
        .route(&format!("{prefix}/schemas/{{id}}"), get(discovery::schema))
        .route(
            &format!("{prefix}/resourcetypes"),
            get(discovery::resource_types),
        )
        .route(
            &format!("{prefix}/resourcetypes/{{id}}"),
            get(discovery::resource_type),
        )
}

fn router(shared: Shared) -> Router {
    let api = scim_routes(Router::new(), "/api/v2/scim/v2");
    let api = scim_routes(api, "/api/v2/scim")
        .route("/api/v2/authorization/roles", get(roles::list_roles))
        .route("/api/v2/authorization/roles/{roleId}", get(roles::get_role));
    Router::new()
        .merge(api)
        .route("/oauth/token", post(oauth::token))
        .nest("/emulator", admin::router())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            admin::observe,
        ))
        .with_state(shared)
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
        .map_request(normalise_scim_path)
        .service(router(shared));
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
