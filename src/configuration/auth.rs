//! `[auth]`: who may call rolesync. API keys (in the config, and in `auth.keys_file`, re-read
//! when it changes and on SIGHUP), bearer tokens from the company's OpenID provider
//! (`[[auth.issuers]]`), the console's sign-in, and the limit on failed authentications.

use super::{ConfigError, Settings, check_url, invalid};
use crate::domain::{JwtAlgorithm, Scope, TokenClaim};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The most keys (config and file together), issuers, and grants per issuer: a config is
/// written by people, and each is checked on every request.
pub const MAX_KEYS: usize = 1000;
pub const MAX_ISSUERS: usize = 16;
pub const MAX_GRANTS: usize = 256;
/// The largest `auth.keys_file` read.
pub const MAX_KEYS_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub keys: Vec<ApiKeySettings>,
    /// A TOML file of `[[keys]]` (the same fields as `auth.keys`), re-read when its
    /// modification time changes and on SIGHUP; its keys add to `auth.keys`. A file that does
    /// not read keeps the keys in force (logged, `rolesync_auth_keys_reload_errors_total`).
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// Providers whose bearer tokens (JWT) `/v1` accepts.
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    #[serde(default)]
    pub console: ConsoleSettings,
    #[serde(default)]
    pub failures: FailedAuthSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Several keys may share a name (a key being rotated and its successor): each works, and
    /// jobs, logs and metrics name the key by this name.
    pub name: String,
    /// Hex SHA-256 of the key: plain keys are never stored.
    pub key_sha256: String,
    pub scopes: Vec<Scope>,
}

/// An OpenID provider (or any OAuth 2.0 server issuing JWT access tokens).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The `iss` of its tokens, exactly; also where discovery looks
    /// (`{issuer}/.well-known/openid-configuration`) when `jwks_uri` is not given.
    pub issuer: String,
    /// The `aud` a token must carry (one of its values, when it is a list).
    pub audience: String,
    /// Where its signing keys are; by discovery when absent.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Signature algorithms accepted (asymmetric only; `none` and HMACs cannot be named).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The least time between two reads of the JWKS on account of a `kid` the cache lacks
    /// (1 to 3600; a token of a key published since is refused until then).
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// The claim whose value is shown as the principal's name (else `name`, `client_id`,
    /// `azp`, `sub`, the first present).
    #[serde(default)]
    pub name_claim: Option<String>,
    /// What a claim's value grants. A token has the union of its grants' scopes; a token that
    /// maps to none is refused (403 on every operation).
    #[serde(default)]
    pub grants: Vec<IssuerGrant>,
}

/// `claim = value` grants `scopes`: e.g. `roles` containing `rolesync.writer`, or `scp`
/// containing `Jobs.Write`. A space-separated string claim (`scope`, `scp`) counts as a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerGrant {
    pub claim: TokenClaim,
    pub value: String,
    pub scopes: Vec<Scope>,
}

fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![JwtAlgorithm::Rs256]
}

fn default_leeway() -> u64 {
    60
}

fn default_jwks_min_refresh() -> u64 {
    60
}

/// `[auth.console]`: how people sign in to `/ui`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// The sign-in form that takes an API key (break-glass); `false` turns it off.
    #[serde(default = "yes")]
    pub api_key_sign_in: bool,
    /// Sign-in through the company's OpenID provider.
    #[serde(default)]
    pub oidc: Option<OidcSettings>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            api_key_sign_in: true,
            oidc: None,
        }
    }
}

/// `[auth.console.oidc]`: the console as a confidential OpenID Connect client (authorization
/// code with PKCE, `state` and `nonce`), its session a sealed cookie any replica opens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer; its endpoints come from discovery.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// This console's callback as the provider knows it: `https://<host>/ui/oidc/callback`.
    pub redirect_url: String,
    /// Where the provider sends the browser after its logout (`https://<host>/ui/login`);
    /// without it, sign-out stays local.
    #[serde(default)]
    pub post_logout_redirect_url: Option<String>,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default)]
    pub name_claim: Option<String>,
    /// What the ID token's claims grant (groups, roles), as `auth.issuers.grants`. A person
    /// needs `jobs:read` (or `admin`) to sign in.
    #[serde(default)]
    pub grants: Vec<IssuerGrant>,
    /// Keys sealing the session cookie (AES-256-GCM), each 32 bytes in base64: the first seals,
    /// every one opens, so a new key is put first and the old one kept until its sessions end.
    pub session_keys: Vec<SecretString>,
    /// A session ends this long after sign-in, whatever its use.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime_secs: u64,
    /// ... or after this long without a page.
    #[serde(default = "default_session_idle")]
    pub session_idle_secs: u64,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

fn default_session_lifetime() -> u64 {
    8 * 3600
}

fn default_session_idle() -> u64 {
    3600
}

impl OidcSettings {
    /// The ID token's issuer as a token issuer: its audience is this client.
    pub fn as_issuer(&self) -> IssuerSettings {
        IssuerSettings {
            issuer: self.issuer.clone(),
            audience: self.client_id.clone(),
            jwks_uri: None,
            algorithms: self.algorithms.clone(),
            leeway_secs: self.leeway_secs,
            jwks_min_refresh_secs: default_jwks_min_refresh(),
            name_claim: self.name_claim.clone(),
            grants: self.grants.clone(),
        }
    }
}

fn yes() -> bool {
    true
}

/// `[auth.failures]`: failed authentications per source address (`/v1` and the console's
/// sign-in alike). Past `max_failures` within `window_secs`, that address is answered 429 with
/// `Retry-After` until the window ends, whatever it presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthSettings {
    pub max_failures: u32,
    pub window_secs: u64,
    /// Addresses tracked at once; beyond, the oldest windows are dropped first (memory stays
    /// bounded whatever the number of addresses).
    pub max_addresses: usize,
}

impl Default for FailedAuthSettings {
    fn default() -> Self {
        FailedAuthSettings {
            max_failures: 20,
            window_secs: 60,
            max_addresses: 10_000,
        }
    }
}

/// The file `auth.keys_file` holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<ApiKeySettings>,
}

/// Reads and checks `auth.keys_file`: each key a hex SHA-256, at most `MAX_KEYS`, at most
/// `MAX_KEYS_FILE_BYTES`. The error names the file and the problem (never a key).
pub fn read_keys_file(path: &Path) -> Result<Vec<ApiKeySettings>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len > MAX_KEYS_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_KEYS_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: KeysFile =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    if file.keys.len() > MAX_KEYS {
        return Err(format!("{}: more than {MAX_KEYS} keys", path.display()));
    }
    for key in &file.keys {
        check_key(key).map_err(|problem| format!("{}: {problem}", path.display()))?;
    }
    Ok(file.keys)
}

fn check_key(key: &ApiKeySettings) -> Result<(), String> {
    let hex = key.key_sha256.len() == 64 && key.key_sha256.chars().all(|c| c.is_ascii_hexdigit());
    if !hex {
        return Err(format!("key `{}`: not a hex SHA-256", key.name));
    }
    if key.name.is_empty() || key.name.len() > 128 {
        return Err("a key's name must be 1 to 128 characters".into());
    }
    Ok(())
}

impl Settings {
    /// `auth.*`: keys with a hex SHA-256; issuers with an http(s) issuer and JWKS, an
    /// audience, algorithms, grants; the key file readable at start.
    pub(super) fn check_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if a.keys.len() > MAX_KEYS {
            return Err(invalid("auth.keys", format!("at most {MAX_KEYS} keys")));
        }
        for key in &a.keys {
            check_key(key).map_err(|p| invalid("auth.keys.key_sha256", p))?;
        }
        if let Some(path) = &a.keys_file {
            read_keys_file(path).map_err(|p| invalid("auth.keys_file", p))?;
        }
        if a.issuers.len() > MAX_ISSUERS {
            return Err(invalid(
                "auth.issuers",
                format!("at most {MAX_ISSUERS} issuers"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for i in &a.issuers {
            check_url("auth.issuers.issuer", &i.issuer)?;
            if !seen.insert(i.issuer.as_str()) {
                return Err(invalid(
                    "auth.issuers.issuer",
                    format!("`{}` is configured twice", i.issuer),
                ));
            }
            if let Some(uri) = &i.jwks_uri {
                check_url("auth.issuers.jwks_uri", uri)?;
            }
            if i.audience.is_empty() {
                return Err(invalid(
                    "auth.issuers.audience",
                    format!("issuer `{}`: required", i.issuer),
                ));
            }
            if i.algorithms.is_empty() {
                return Err(invalid(
                    "auth.issuers.algorithms",
                    format!("issuer `{}`: name at least one", i.issuer),
                ));
            }
            if i.leeway_secs > 600 {
                return Err(invalid("auth.issuers.leeway_secs", "must be at most 600"));
            }
            if !(1..=3600).contains(&i.jwks_min_refresh_secs) {
                return Err(invalid(
                    "auth.issuers.jwks_min_refresh_secs",
                    "must be between 1 and 3600",
                ));
            }
            if i.grants.len() > MAX_GRANTS {
                return Err(invalid(
                    "auth.issuers.grants",
                    format!("at most {MAX_GRANTS} grants per issuer"),
                ));
            }
        }
        if let Some(o) = &a.console.oidc {
            check_url("auth.console.oidc.issuer", &o.issuer)?;
            check_url("auth.console.oidc.redirect_url", &o.redirect_url)?;
            if let Some(u) = &o.post_logout_redirect_url {
                check_url("auth.console.oidc.post_logout_redirect_url", u)?;
            }
            if o.client_secret.is_none() {
                return Err(invalid(
                    "auth.console.oidc.client_secret",
                    "required (or client_secret_file): the console is a confidential client",
                ));
            }
            if !o.scopes.iter().any(|s| s == "openid") {
                return Err(invalid("auth.console.oidc.scopes", "must include openid"));
            }
            if o.session_keys.is_empty() || o.session_keys.len() > 4 {
                return Err(invalid(
                    "auth.console.oidc.session_keys",
                    "one to four keys, the first sealing",
                ));
            }
            for k in &o.session_keys {
                if session_key(k.expose_secret()).is_none() {
                    return Err(invalid(
                        "auth.console.oidc.session_keys",
                        "each key is 32 random bytes in base64 (`openssl rand -base64 32`)",
                    ));
                }
            }
            if o.session_idle_secs == 0 || o.session_idle_secs > o.session_lifetime_secs {
                return Err(invalid(
                    "auth.console.oidc.session_idle_secs",
                    "between 1 and session_lifetime_secs",
                ));
            }
            if o.session_lifetime_secs > 7 * 86_400 {
                return Err(invalid(
                    "auth.console.oidc.session_lifetime_secs",
                    "at most 7 days",
                ));
            }
        }
        let f = &a.failures;
        if f.max_failures == 0 || !(1..=86_400).contains(&f.window_secs) {
            return Err(invalid(
                "auth.failures",
                "max_failures must be at least 1 and window_secs between 1 and 86400",
            ));
        }
        if !(1..=1_000_000).contains(&f.max_addresses) {
            return Err(invalid(
                "auth.failures.max_addresses",
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }
}

/// A session key's 32 bytes, from its base64 (standard or URL-safe, padded or not).
pub fn session_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let t = text.trim();
    let bytes = STANDARD
        .decode(t)
        .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
        .ok()?;
    bytes.try_into().ok()
}
