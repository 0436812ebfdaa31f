//! API keys without restarts (`auth.keys_file`, re-read on SIGHUP and when it changes; several
//! keys per name; the last use of each name as a metric), and the limit on failed
//! authentications per source address (429 with `Retry-After`, counted by reason).

use crate::helpers::*;
use crate::process::{emulator_with, signal, start_service};
use rolesync::http::auth::key_digest_hex;
use serde_json::Value;
use std::time::Duration;

fn keys_file(keys: &[(&str, &str)]) -> String {
    keys.iter()
        .map(|(name, secret)| {
            format!(
                "[[keys]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nscopes = [\"jobs:read\"]\n",
                key_digest_hex(secret)
            )
        })
        .collect()
}

async fn status(url: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/v1/jobs"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (10 s at most) until `key` answers `want`.
async fn until(url: &str, key: &str, want: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if status(url, key).await == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(url: &str, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn keys_in_their_own_file_are_reloaded_on_sighup_and_two_keys_of_a_name_both_work() {
    let emulator = emulator_with(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(dir.path()).await;
    let file = dir.path().join("keys.toml");
    std::fs::write(&file, keys_file(&[("hr", "hr-old-secret")])).unwrap();
    // Far apart so SIGHUP, not the modification time, is what is tested first.
    let extra = format!(
        "[auth]\nkeys_file = \"{}\"\n[auth.failures]\nmax_failures = 1000\n",
        file.display()
    );
    let mut svc = start_service(dir.path(), &store.url, &emulator.base_url(), &extra).await;
    assert_eq!(status(&svc.url, "hr-old-secret").await, 200);
    assert_eq!(status(&svc.url, "hr-new-secret").await, 401);

    // Rotation: the successor is added under the same name; both work.
    std::fs::write(
        &file,
        keys_file(&[("hr", "hr-old-secret"), ("hr", "hr-new-secret")]),
    )
    .unwrap();
    signal(&svc.child, "-HUP");
    until(
        &svc.url,
        "hr-new-secret",
        200,
        "the new key works after SIGHUP",
    )
    .await;
    assert_eq!(status(&svc.url, "hr-old-secret").await, 200);
    // The config's key still works beside the file's.
    assert_eq!(status(&svc.url, ADMIN_KEY).await, 200);

    // A file that does not read keeps the keys in force.
    std::fs::write(&file, "[[keys]]\nname = \"hr\"\nkey_sha256 = \"not hex\"\n").unwrap();
    signal(&svc.child, "-HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&svc.url, "rolesync_auth_keys_reload_errors_total")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file is refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&svc.url, "hr-old-secret").await, 200);
    assert_eq!(status(&svc.url, "hr-new-secret").await, 200);

    // The old key retired: a change of the file is enough (no signal).
    std::fs::write(&file, keys_file(&[("hr", "hr-new-secret")])).unwrap();
    until(
        &svc.url,
        "hr-old-secret",
        401,
        "the retired key stops working",
    )
    .await;
    assert_eq!(status(&svc.url, "hr-new-secret").await, 200);

    // The last use of each key name, and no key material, on /metrics.
    let used = metric(
        &svc.url,
        "rolesync_auth_key_last_used_timestamp_seconds{key=\"hr\"}",
    )
    .await
    .expect("the last use of hr");
    assert!(used > 1.7e9, "{used}");
    let text = reqwest::get(format!("{}/metrics", svc.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in ["hr-old-secret", "hr-new-secret"] {
        assert!(!text.contains(secret));
        assert!(!text.contains(&key_digest_hex(secret)));
    }
    signal(&svc.child, "-TERM");
    assert_eq!(crate::process::wait_exit(&mut svc.child, 30).await, Some(0));
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_with_429_and_retry_after() {
    let app = spawn_app_with(TestOptions {
        config: "[auth.failures]\nmax_failures = 3\nwindow_secs = 60\n".into(),
        ..TestOptions::default()
    })
    .await;
    // No credential at all is counted, but not held against the address.
    for _ in 0..5 {
        let r = app
            .client
            .get(format!("{}/v1/jobs", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    for _ in 0..3 {
        assert_eq!(app.get("/v1/jobs", "wrong-key").await.status(), 401);
    }
    // Over the limit: even a good key from this address waits.
    let resp = app.get("/v1/jobs", READER_KEY).await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 429);
    // The console's sign-in form is held too.
    let form = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/ui/login", app.address))
        .form(&[("key", READER_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 429);
    assert!(form.headers().contains_key("retry-after"));

    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |reason: &str| -> f64 {
        let line = format!("rolesync_auth_failures_total{{reason=\"{reason}\"}}");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    };
    assert_eq!(count("missing"), 5.0);
    assert_eq!(count("unknown_key"), 3.0);
    assert_eq!(count("limited"), 2.0);
}

#[tokio::test]
async fn failed_console_sign_ins_count_toward_the_limit() {
    let app = spawn_app_with(TestOptions {
        config: "[auth.failures]\nmax_failures = 2\nwindow_secs = 60\n".into(),
        ..TestOptions::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |key: &'static str| {
        client
            .post(format!("{}/ui/login", app.address))
            .form(&[("key", key)])
            .send()
    };
    assert_eq!(post("guess-1").await.unwrap().status(), 401);
    assert_eq!(post("guess-2").await.unwrap().status(), 401);
    assert_eq!(post(READER_KEY).await.unwrap().status(), 429);
    assert_eq!(app.get("/v1/jobs", READER_KEY).await.status(), 429);
}

#[tokio::test]
async fn the_key_sign_in_form_can_be_turned_off() {
    let app = spawn_app_with(TestOptions {
        config: "[auth.console]\napi_key_sign_in = false\n".into(),
        ..TestOptions::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/ui/login", app.address))
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("set-cookie").is_none());
    let page = client
        .get(format!("{}/ui/login", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("turned off"), "{page}");
    // The API's keys are not affected.
    assert_eq!(app.get("/v1/jobs", ADMIN_KEY).await.status(), 200);
}
