//! Authentication cost: `cargo bench --bench auth` (needs Node and `npm ci` in tests/oidc).
//!
//! Starts the test OpenID provider (`tests/oidc/provider.mjs`, `oidc-provider`) on 127.0.0.1,
//! builds rolesync's `Authenticator` with it as an issuer and 4 API keys, then reports:
//! - the time to authenticate one request with a bearer token (RS256, 2048-bit key) once the
//!   JWKS is cached, against the time with an API key (the median of 5 runs of 20 000 each);
//! - the JWKS reads the provider served: at the first token, then during a key rotation in
//!   which 8 tasks each authenticate 250 tokens of the new key at once, then during a flood of
//!   1 000 tokens naming unknown `kid`s (with `jwks_min_refresh_secs = 1`, so that the rotation,
//!   a few seconds after the first read, is not held by the default minute).

use rolesync::configuration::Settings;
use rolesync::http::auth::{Authenticator, key_digest_hex};
use serde_json::Value;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
/// `jwks_min_refresh_secs` here (the default is 60): the rotation comes a few seconds after the
/// first read, as a real one comes long after it.
const MIN_REFRESH_SECS: u64 = 1;
const PER_RUN: usize = 20_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

async fn json(req: reqwest::RequestBuilder) -> Value {
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn token(http: &reqwest::Client, issuer: &str) -> String {
    let v = json(
        http.post(format!("{issuer}/token"))
            .basic_auth("hr-reader", Some("hr-reader-secret"))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    v["access_token"].as_str().unwrap_or_default().to_owned()
}

async fn fetches(http: &reqwest::Client, issuer: &str) -> u64 {
    json(http.get(format!("{issuer}/_test/stats"))).await["jwks_fetches"]
        .as_u64()
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
    let mut child = Command::new("node")
        .arg(format!("{dir}/provider.mjs"))
        .env("OIDC_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("node (and `npm ci` in tests/oidc) is needed: {e}"));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the provider did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let keys: String = (0..4)
        .map(|i| {
            format!(
                "[[auth.keys]]\nname = \"k{i}\"\nkey_sha256 = \"{}\"\nscopes = [\"jobs:read\"]\n",
                key_digest_hex(&format!("key-{i}"))
            )
        })
        .collect();
    let toml = format!(
        "{keys}[[auth.issuers]]\nissuer = \"{issuer}\"\naudience = \"rolesync\"\njwks_min_refresh_secs = {MIN_REFRESH_SECS}\n\
         [[auth.issuers.grants]]\nclaim = \"roles\"\nvalue = \"rolesync.reader\"\nscopes = [\"jobs:read\"]\n"
    );
    let settings = Settings::from_toml_overrides(&toml).unwrap_or_else(|e| panic!("{e}"));
    let auth =
        Arc::new(Authenticator::standalone(&settings.auth).unwrap_or_else(|e| panic!("{e}")));

    let t = token(&http, &issuer).await;
    assert!(
        auth.authenticate(&t).await.is_ok(),
        "a real token is accepted"
    );
    println!(
        "JWKS reads after the first token: {}",
        fetches(&http, &issuer).await
    );

    let mut token_runs = Vec::new();
    let mut key_runs = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        for _ in 0..PER_RUN {
            black_box(auth.authenticate(black_box(&t)).await.is_ok());
        }
        token_runs.push(started.elapsed());
        let started = Instant::now();
        for _ in 0..PER_RUN {
            black_box(auth.authenticate(black_box("key-3")).await.is_ok());
        }
        key_runs.push(started.elapsed());
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / PER_RUN as f64;
    let (tok, key) = (per(median(token_runs)), per(median(key_runs)));
    println!("bearer token (RS256, warm JWKS cache): {tok:.1} µs per request");
    println!("API key (4 configured):                {key:.2} µs per request");
    println!("ratio: {:.0}×", tok / key);

    tokio::time::sleep(Duration::from_secs(MIN_REFRESH_SECS)).await;
    let before = fetches(&http, &issuer).await;
    let _ = json(http.post(format!("{issuer}/_test/rotate"))).await;
    let fresh = token(&http, &issuer).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            let fresh = fresh.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..250 {
                    ok += usize::from(auth.authenticate(&fresh).await.is_ok());
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    println!(
        "key rotation: {ok} of 2000 tokens of the new key accepted; JWKS reads during it: {}",
        fetches(&http, &issuer).await - before
    );

    let before = fetches(&http, &issuer).await;
    let flood = Instant::now();
    let mut refused = 0;
    for i in 0..1000 {
        let claims = serde_json::json!({"iss": issuer, "aud": "rolesync", "sub": "x", "exp": 4_000_000_000u64});
        let forged = json(
            http.post(format!("{issuer}/_test/sign"))
                .json(&serde_json::json!({"claims": claims, "header": {"kid": format!("made-up-{i}")}, "key": "stranger"})),
        )
        .await["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        refused += usize::from(auth.authenticate(&forged).await.is_err());
    }
    println!(
        "unknown kids: {refused} of 1000 refused in {:.1} s; JWKS reads during the flood: {} \
         (at most one per jwks_min_refresh_secs = {MIN_REFRESH_SECS} s)",
        flood.elapsed().as_secs_f64(),
        fetches(&http, &issuer).await - before
    );
    let _ = child.kill();
    let _ = child.wait();
}
