//! A real OpenID provider for the tests: the `oidc-provider` package (npm, pinned in
//! `tests/oidc/package.json`) run by Debian's Node on 127.0.0.1, configured by
//! `tests/oidc/provider.mjs` (its clients, people, claims and test hooks are listed there).
//!
//! `Idp::start()` is `None` (with a `SKIPPED` line saying why) when Node or the package is
//! missing, outside CI; in CI (`CI` set) that is a failure naming what is missing.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Idp {
    child: Child,
    pub issuer: String,
    client: reqwest::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc"))
}

/// Why the provider cannot run here, if it cannot.
fn missing() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed (Debian: apt-get install nodejs npm)".into());
    }
    if !oidc_dir().join("node_modules/oidc-provider").is_dir() {
        return Some("oidc-provider is not installed: run `npm ci` in tests/oidc".into());
    }
    None
}

/// `None` (skipped, outside CI) or a panic (in CI) when the provider cannot run.
pub fn available(test: &str) -> bool {
    match missing() {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: the OpenID provider cannot run: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

impl Idp {
    /// Starts the provider; `redirect_uris` are the console client's. Waits for its discovery
    /// document (30 s at most).
    pub async fn start(redirect_uris: &[String], post_logout: &[String]) -> Idp {
        let port = crate::process::free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("idp.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_AUDIENCE", "rolesync")
            .env("OIDC_REDIRECT_URIS", redirect_uris.join(" "))
            .env("OIDC_POST_LOGOUT", post_logout.join(" "))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("node starts");
        let mut idp = Idp {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            log,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let url = format!("{}/.well-known/openid-configuration", idp.issuer);
        loop {
            if let Ok(r) = idp.client.get(&url).send().await
                && r.status() == 200
            {
                return idp;
            }
            if let Ok(Some(status)) = idp.child.try_wait() {
                panic!("the provider exited ({status}): {}", idp.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the provider did not serve discovery within 30 s: {}",
                idp.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `[[auth.issuers]]` for this provider: roles `rolesync.writer` → jobs:write + jobs:read,
    /// `rolesync.reader` → jobs:read; groups `rolesync-admins` → admin, `rolesync-readers` →
    /// jobs:read. JWKS by discovery, read again on an unknown `kid` at most every
    /// `min_refresh_secs`.
    pub fn issuer_toml(&self) -> String {
        self.issuer_toml_with(60)
    }

    pub fn issuer_toml_with(&self, min_refresh_secs: u64) -> String {
        format!(
            r#"
[[auth.issuers]]
issuer = "{issuer}"
audience = "rolesync"
algorithms = ["RS256"]
leeway_secs = 5
jwks_min_refresh_secs = {min_refresh_secs}
[[auth.issuers.grants]]
claim = "roles"
value = "rolesync.writer"
scopes = ["jobs:write", "jobs:read"]
[[auth.issuers.grants]]
claim = "roles"
value = "rolesync.reader"
scopes = ["jobs:read"]
[[auth.issuers.grants]]
claim = "groups"
value = "rolesync-admins"
scopes = ["admin"]
[[auth.issuers.grants]]
claim = "groups"
value = "rolesync-readers"
scopes = ["jobs:read"]
"#,
            issuer = self.issuer
        )
    }

    /// An access token by the client-credentials grant, for `client` (`hr-writer`,
    /// `hr-reader`, `hr-nobody`; the secret is `<client>-secret`).
    pub async fn client_token(&self, client: &str) -> String {
        let resp = self
            .client
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("grant_type", "client_credentials"), ("scope", "jobs:read")])
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "token: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A JWS of `claims` signed by the provider's current key (or, `stranger`, a key it never
    /// published); `header` adds to or overrides the protected header.
    pub async fn sign(&self, claims: Value, header: Value, stranger: bool) -> String {
        let key = if stranger { "stranger" } else { "current" };
        let body: Value = self
            .client
            .post(format!("{}/_test/sign", self.issuer))
            .json(&json!({"claims": claims, "header": header, "key": key}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["token"].as_str().expect("signed").to_owned()
    }

    /// A token signed with HS256 whose secret is the provider's public key (PEM): the
    /// algorithm-confusion forgery.
    pub async fn sign_hs256_with_public_key(&self, claims: Value) -> String {
        let body: Value = self
            .client
            .post(format!("{}/_test/sign", self.issuer))
            .json(&json!({"claims": claims, "key": "hs256-public"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["token"].as_str().expect("signed").to_owned()
    }

    /// A new signing key, published first (the old one stays published).
    pub async fn rotate(&self) -> Vec<String> {
        let body: Value = self
            .client
            .post(format!("{}/_test/rotate", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["kids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    }

    /// How often the JWKS was read.
    pub async fn jwks_fetches(&self) -> u64 {
        let body: Value = self
            .client
            .get(format!("{}/_test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["jwks_fetches"].as_u64().unwrap()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `kid` of a token's header.
pub fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap_or_default().to_owned()
}
