//! Wires the service together: store, policy, SCIM client, pipeline, webhook dispatcher and the
//! HTTP API. `Application::build` binds first, so tests can ask for port 0 and read it back.

use crate::audit::{Dispatcher, EventFactory};
use crate::configuration::Settings;
use crate::http::auth::Authenticator;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::pipeline::{Circuit, Deps, Pipeline};
use crate::policy::Policy;
use crate::policy::live::LivePolicy;
use crate::scim::ScimClient;
use crate::store::{Store, now_ms};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    pipeline: Arc<Pipeline>,
    dispatcher: Dispatcher,
}

impl Application {
    /// Loads the policy from `policy.file`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let path = settings.policy.file.clone();
        let policy = Policy::load(&path).map_err(|e| {
            anyhow::anyhow!("configuration key `policy.file` ({}): {e}", path.display())
        })?;
        Self::build_with_policy(settings, policy, Some(path)).await
    }

    /// With a policy already loaded (`demo`, tests); `path`, if any, is watched for changes.
    pub async fn build_with_policy(
        settings: Settings,
        policy: Policy,
        policy_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.bind)
            .await
            .with_context(|| format!("cannot listen on {} (server.bind)", settings.server.bind))?;
        let store = Store::connect(&settings.store.url, settings.store.max_connections)
            .await
            .with_context(|| "cannot open the store (store.url)".to_string())?;
        let metrics = Metrics::new()?;
        let scim = Arc::new(ScimClient::from_settings(&settings, metrics.clone())?);
        let live = Arc::new(LivePolicy::new(policy, policy_path));
        if settings.policy.import_from_target {
            import_catalog(&scim, &live).await;
        }
        let settings = Arc::new(settings);
        let events = EventFactory::new(&settings.webhooks);
        let circuit = Arc::new(Circuit::default());
        let wake_dispatcher = Arc::new(Notify::new());
        let deps = Deps {
            store: store.clone(),
            policy: live.clone(),
            scim: scim.clone(),
            metrics: metrics.clone(),
            events: events.clone(),
            settings: settings.clone(),
            owner: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
            wake_planner: Arc::new(Notify::new()),
            wake_claimer: Arc::new(Notify::new()),
            wake_dispatcher: wake_dispatcher.clone(),
            circuit: circuit.clone(),
            job_policies: Default::default(),
            reads: Default::default(),
            chunk_runs: Default::default(),
            live: Default::default(),
            health: Default::default(),
            error_ratios: Default::default(),
            org_roles: Default::default(),
        };
        let dispatcher = Dispatcher::new(
            store.clone(),
            &settings.webhooks,
            metrics.clone(),
            wake_dispatcher,
        )?;
        let pipeline = Arc::new(Pipeline::spawn(deps));
        let auth = Authenticator::new(&settings.auth, metrics.clone())?;
        if auth.keys.current().is_empty() && auth.issuers() == 0 {
            tracing::warn!(
                "no API keys (auth.keys, auth.keys_file) nor token issuers (auth.issuers) configured: every /v1 call will answer 401"
            );
        }
        let ingests = Arc::new(crate::http::IngestSlots::new(
            settings.server.max_ingests,
            settings.server.max_ingests_per_key,
        ));
        let state = AppState {
            store,
            policy: live,
            metrics,
            settings,
            auth: Arc::new(auth),
            events,
            pipeline: pipeline.clone(),
            circuit,
            shutting_down: Arc::new(AtomicBool::new(false)),
            ingests,
            scim,
        };
        Ok(Application {
            listener,
            state,
            pipeline,
            dispatcher,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The HTTP routes `run_until_stopped` serves.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then stops in order: stop accepting, let in-flight
    /// chunks finish (or release them) within `server.shutdown_grace_secs`, stop delivering.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            pipeline,
            dispatcher,
        } = self;
        let stop_http = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let addr = listener.local_addr()?;
        tracing::info!(address = %addr, store = state.store.backend_name(), "listening on http://{addr}");

        let dispatcher_task = tokio::spawn(dispatcher.run(stop_background.clone()));
        let housekeeping = tokio::spawn(housekeeping(state.clone(), stop_background.clone()));
        let app = router(state.clone());
        let http_stop = stop_http.clone();
        let server = tokio::spawn(async move {
            // The peer's address is the source the failed-authentication limit counts by.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await
        });

        shutdown.await;
        tracing::info!("shutting down");
        state.shutting_down.store(true, Ordering::Relaxed);
        stop_http.cancel();
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
        pipeline.shutdown(grace).await;
        stop_background.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), dispatcher_task).await;
        let _ = housekeeping.await;
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
            Err(_) => tracing::warn!("HTTP requests still open after shutdown; dropping them"),
            _ => {}
        }
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed now, not when the future is first polled: `serve` answers
    // `/readyz` before `run_until_stopped` awaits this, and a SIGTERM sent in between (an
    // orchestrator, a test that saw it ready) would otherwise kill the process outright, with
    // no graceful shutdown.
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Policy and API-key-file reloads (SIGHUP or a change of the file's modification time) and
/// retention pruning.
async fn housekeeping(state: AppState, stop: CancellationToken) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_prune = 0i64;
    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fut = std::future::pending::<()>();
        let mut reload = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup_fut => reload = true,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if state.policy.file_changed() {
            reload = true;
        }
        if reload || state.auth.keys.file_changed() {
            reload_keys(&state);
        }
        if reload {
            match state.policy.reload() {
                Ok(()) => {
                    state.metrics.policy_valid.set(1);
                    tracing::info!(policy.fingerprint = %state.policy.current().fingerprint(), "policy reloaded");
                }
                Err(e) => {
                    state.metrics.policy_valid.set(0);
                    state.metrics.policy_reload_errors_total.inc();
                    tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
                }
            }
        }
        let days = state.settings.store.retention_days;
        if days > 0 && now_ms() - last_prune > 3_600_000 {
            last_prune = now_ms();
            match state.store.prune(now_ms() - days as i64 * 86_400_000).await {
                Ok(n) if n > 0 => tracing::info!(jobs = n, "pruned finished jobs past retention"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune old jobs"),
            }
        }
    }
}

/// Reads `auth.keys_file` again; a file that does not read keeps the keys in force.
fn reload_keys(state: &AppState) {
    if !state.auth.keys.has_file() {
        return;
    }
    match state.auth.keys.reload() {
        Ok(n) => tracing::info!(keys = n, "API keys reloaded (auth.keys_file)"),
        Err(e) => {
            state.metrics.auth_keys_reload_errors_total.inc();
            tracing::error!(error = %e, "API key file reload refused; the keys in force stay");
        }
    }
}

async fn import_catalog(scim: &ScimClient, live: &LivePolicy) {
    let tally = crate::scim::CallTally::default();
    match scim.list_roles(&tally).await {
        Ok(roles) => {
            let imported: Vec<crate::policy::ImportedRole> = roles
                .into_iter()
                .map(|r| crate::policy::ImportedRole {
                    name: r.name,
                    permissions: r.permissions,
                })
                .collect();
            let (merged, missing) = live.current().merge_imported_catalog(&imported);
            for m in &missing {
                tracing::warn!(problem = %m, "role catalog import");
            }
            tracing::info!(
                roles = imported.len(),
                missing = missing.len(),
                "imported the target's role catalog"
            );
            live.replace_imported(merged, missing);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot import the target's role catalog; using the local one")
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rolesync".into())
}
