//! Settings: built-in defaults → `config/default.toml` → `--config FILE` → environment
//! `ROLESYNC__SECTION__KEY`. Secrets may be given as `*_file` paths. `Settings::load` validates
//! everything and names the offending key; closed vocabularies (scopes, event types, the log
//! format) are typed, so an unknown word is refused at start-up. The keys are listed, with their
//! defaults, in `config/default.toml`. This module imports nothing of rolesync but `domain`.
//!
//! Layout: this module loads and layers the settings and runs the checks; each section (or
//! group of sections) has a file with its types, defaults and checks: `server` (`[server]`,
//! `[store]`, `[ingest]`), `target`, `sync`, `auth`, `webhooks`,
//! `observability` (`[log]`, `[telemetry]`, `[reconcile]`), `drift` (`[drift]`); `origin`
//! tells which target keys an operator's layers set.

mod auth;
mod drift;
mod observability;
mod origin;
mod server;
mod sync;
mod target;
mod webhooks;

pub use auth::{
    ApiKeySettings, AuthSettings, ConsoleSettings, FailedAuthSettings, IssuerGrant, IssuerSettings,
    MAX_KEYS, OidcSettings, read_keys_file, session_key,
};
pub use drift::{DriftSettings, DriftSource};
pub use observability::{LogSettings, ReconcileSettings, TelemetrySettings};
pub use origin::{TARGET_KEYS_HELP, target_keys_from_defaults};
pub use server::{IngestSettings, ServerSettings, StoreSettings};
pub use sync::{ReadStrategy, SyncSettings};
pub use target::{MAX_BULK_SUBJECTS, TargetProfile, TargetSettings};
pub use webhooks::{WebhookEndpointSettings, WebhookSettings};

use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The defaults compiled into the binary, so `rolesync serve` and `demo` run with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
    #[serde(default)]
    pub drift: DriftSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub file: PathBuf,
    #[serde(default)]
    pub import_from_target: bool,
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
        Self::load_from(file, None)
    }

    /// `load`, with the environment given as a map instead of read from the process (`None`:
    /// the process's), so that what the environment sets can be tested without touching it.
    pub(crate) fn load_from(
        file: Option<&Path>,
        env: Option<config::Map<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let builder = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::with_name("config/default.toml").required(false));
        Self::from_config(operator_layers(builder, file, env).build()?)
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
        if let Some(o) = &mut self.auth.console.oidc
            && let Some(path) = &o.client_secret_file
        {
            o.client_secret = Some(read_secret("auth.console.oidc.client_secret_file", path)?);
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
        self.check_drift()?;
        self.reconcile
            .cron()
            .map_err(|e| invalid("reconcile.schedule", e))?;
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

/// The layers an operator writes, over whatever `builder` holds: the `--config` file, then the
/// `ROLESYNC__SECTION__KEY` environment (`env`, or the process's when `None`).
fn operator_layers(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> config::ConfigBuilder<config::builder::DefaultState> {
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder.add_source(
        config::Environment::with_prefix("ROLESYNC")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env),
    )
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
mod tests;
