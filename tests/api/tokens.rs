//! Machines with bearer tokens from a real OpenID provider (`idp`, `oidc-provider`): a
//! client-credentials token calls `/v1` with the scopes its claims map to; the provider rotates
//! its signing key mid-test and new tokens are accepted without a restart; forged tokens are
//! each refused 401 with a problem body, and none of them appears in the log.

use crate::helpers::*;
use crate::idp::{Idp, kid_of, now};
use crate::process::start_service;
use serde_json::{Value, json};
use std::time::Duration;

async fn app_with(idp: &Idp) -> TestApp {
    spawn_app_with(TestOptions {
        config: idp.issuer_toml(),
        ..TestOptions::default()
    })
    .await
}

async fn call(
    app_url: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .request(method.clone(), format!("{app_url}{path}"))
        .bearer_auth(token);
    if method == reqwest::Method::POST && path == "/v1/jobs" {
        req = req
            .header("content-type", "text/csv")
            .body("external_id,role_template,license_tier\nT1,Agent,Standard Agent\n");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_client_credentials_token_calls_v1_with_the_scopes_its_claims_map_to() {
    if !crate::idp::available("a_client_credentials_token_calls_v1…") {
        return;
    }
    let idp = Idp::start(&[], &[]).await;
    let app = app_with(&idp).await;
    app.seed(&[("T1", &[])]).await;
    let writer = idp.client_token("hr-writer").await;
    let resp = call(&app.address, reqwest::Method::POST, "/v1/jobs", &writer).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let job: Value = resp.json().await.unwrap();
    // The job names its submitter: the token's issuer, subject and client.
    assert_eq!(
        job["submitted_by"],
        json!({"kind": "token", "name": "hr-writer", "issuer": idp.issuer, "subject": "hr-writer"})
    );
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["submitted_by"]["kind"], "token");

    let reader = idp.client_token("hr-reader").await;
    let list = call(&app.address, reqwest::Method::GET, "/v1/jobs", &reader).await;
    assert_eq!(list.status(), 200);
    let refused = call(&app.address, reqwest::Method::POST, "/v1/jobs", &reader).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("jobs:write"));

    // A token whose claims map to nothing: authenticated, allowed nothing.
    let nobody = idp.client_token("hr-nobody").await;
    let resp = call(&app.address, reqwest::Method::GET, "/v1/jobs", &nobody).await;
    assert_eq!(resp.status(), 403);
    // API keys work beside tokens.
    assert_eq!(app.get("/v1/jobs", READER_KEY).await.status(), 200);
}

/// The least time between two JWKS reads on an unknown `kid` in the rotation test (the
/// default is 60 s; the rule is the same).
const MIN_REFRESH_SECS: u64 = 3;

#[tokio::test]
async fn the_provider_rotates_its_key_mid_test_and_new_tokens_are_accepted_without_a_restart() {
    if !crate::idp::available("the_provider_rotates_its_key…") {
        return;
    }
    let idp = Idp::start(&[], &[]).await;
    // Refusals here are the point: the failure limit (tested in access_keys.rs) is set apart.
    let app = spawn_app_with(TestOptions {
        config: format!(
            "{}\n[auth.failures]\nmax_failures = 1000\n",
            idp.issuer_toml_with(MIN_REFRESH_SECS)
        ),
        ..TestOptions::default()
    })
    .await;
    let before = idp.client_token("hr-reader").await;
    assert_eq!(
        call(&app.address, reqwest::Method::GET, "/v1/jobs", &before)
            .await
            .status(),
        200
    );
    assert_eq!(
        idp.jwks_fetches().await,
        1,
        "the JWKS is read once, then cached"
    );
    for _ in 0..10 {
        let r = call(&app.address, reqwest::Method::GET, "/v1/jobs", &before).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        idp.jwks_fetches().await,
        1,
        "no read while the kid is known"
    );

    let kids = idp.rotate().await;
    let after = idp.client_token("hr-reader").await;
    assert_eq!(
        kid_of(&after),
        kids[0],
        "the new token is signed by the new key"
    );
    assert_ne!(kid_of(&after), kid_of(&before));
    // Accepted without a restart as soon as the JWKS may be read again (a read came less than
    // MIN_REFRESH_SECS ago: until then the unknown kid is refused, and costs no read).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(&app.address, reqwest::Method::GET, "/v1/jobs", &after).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 401);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key's token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..10 {
        let r = call(&app.address, reqwest::Method::GET, "/v1/jobs", &after).await;
        assert_eq!(r.status(), 200, "a token of the new key, no restart");
    }
    // The old key is still published, so its tokens still work until they expire.
    let r = call(&app.address, reqwest::Method::GET, "/v1/jobs", &before).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        idp.jwks_fetches().await,
        2,
        "one read for the rotation's new kid, whatever the number of calls"
    );

    // A flood of unknown kids costs the provider at most one read per MIN_REFRESH_SECS.
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let forged = idp
            .sign(valid_claims(&idp, "hr-reader"), json!({}), true)
            .await;
        let r = call(&app.address, reqwest::Method::GET, "/v1/jobs", &forged).await;
        assert_eq!(r.status(), 401);
    }
    let bound = 2 + 1 + started.elapsed().as_secs() / MIN_REFRESH_SECS;
    let reads = idp.jwks_fetches().await;
    assert!(reads <= bound, "{reads} reads, at most {bound}");
}

fn valid_claims(idp: &Idp, sub: &str) -> Value {
    let t = now();
    json!({
        "iss": idp.issuer, "aud": "rolesync", "sub": sub, "client_id": sub,
        "iat": t, "exp": t + 300, "roles": ["rolesync.writer"],
    })
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn forged_tokens_are_refused_401_with_a_problem_and_none_appears_in_the_log() {
    if !crate::idp::available("forged_tokens_are_refused…") {
        return;
    }
    let idp = Idp::start(&[], &[]).await;
    let emulator = crate::process::emulator_with(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(dir.path()).await;
    let svc = start_service(
        dir.path(),
        &store.url,
        &emulator.base_url(),
        &idp.issuer_toml(),
    )
    .await;
    let port = svc.url.rsplit(':').next().unwrap().to_owned();

    // A real token works, so each refusal below is the forgery's.
    let real = idp.client_token("hr-writer").await;
    let ok = call(&svc.url, reqwest::Method::GET, "/v1/jobs", &real).await;
    assert_eq!(ok.status(), 200);

    let t = now();
    let mut claims = valid_claims(&idp, "forger");
    let mut forged: Vec<(&str, String)> = Vec::new();
    claims["iss"] = json!("http://127.0.0.1:1/evil");
    forged.push((
        "wrong issuer",
        idp.sign(claims.clone(), json!({}), false).await,
    ));
    claims = valid_claims(&idp, "forger");
    claims["aud"] = json!("someone-else");
    forged.push((
        "wrong audience",
        idp.sign(claims.clone(), json!({}), false).await,
    ));
    claims = valid_claims(&idp, "forger");
    claims["iat"] = json!(t - 7200);
    claims["exp"] = json!(t - 3600);
    forged.push(("expired", idp.sign(claims.clone(), json!({}), false).await));
    claims = valid_claims(&idp, "forger");
    forged.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        ),
    ));
    forged.push((
        "HS256 signed with the public key",
        idp.sign_hs256_with_public_key(claims.clone()).await,
    ));
    forged.push((
        "unknown kid",
        idp.sign(claims.clone(), json!({}), true).await,
    ));
    // A real token whose payload is changed: the signature no longer matches.
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let mut payload: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap()
    };
    payload["roles"] = json!(["rolesync.writer", "rolesync.admin"]);
    payload["sub"] = json!("someone-else");
    parts[1] = b64(&payload);
    forged.push(("tampered payload", parts.join(".")));

    for (what, token) in &forged {
        let resp = call(&svc.url, reqwest::Method::GET, "/v1/jobs", token).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], 401, "{what}");
        assert_eq!(body["type"], "https://rolesync.dev/problems/unauthorized");
    }
    let metrics = reqwest::get(format!("{}/metrics", svc.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in [
        "issuer",
        "audience",
        "expired",
        "algorithm",
        "unknown_kid",
        "signature",
    ] {
        let line = format!("rolesync_auth_failures_total{{reason=\"{reason}\"}}");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0);
        assert!(n >= 1.0, "{reason}: {n}\n{metrics}");
    }

    // The log has the refusals (as words), and no token: not whole, not its signature, not
    // its payload.
    drop(svc);
    let log = std::fs::read_to_string(dir.path().join(format!("rolesync-{port}.log"))).unwrap();
    assert!(log.contains("authentication refused"), "{log}");
    for (what, token) in forged
        .iter()
        .chain([("the real token", real.clone())].iter())
    {
        for (i, part) in token.split('.').enumerate() {
            if part.len() >= 16 {
                assert!(
                    !log.contains(part),
                    "{what}: part {i} of the token is in the log"
                );
            }
        }
    }
}
