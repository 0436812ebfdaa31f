//! Joiners sent before their account exists (issue 29 item 3): the user waits, shown
//! `awaiting_user`, looked up again on a backoff; applied within one retry interval of the
//! account appearing; `not_found` with its `role_sync.failed` webhook when the wait ends. The
//! lookups spent waiting stay within the documented bound (`config/default.toml`, `[sync]`).

use crate::helpers::*;
use crate::webhooks::{FAST, Hook, Receiver, app_with_hooks, new_secret, wait_until};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The wait settings of these tests: short, so a whole wait fits in seconds.
fn waits(await_secs: u64, first: u64, cap: u64) -> String {
    format!(
        "[sync]\nawait_user_secs = {await_secs}\nawait_user_first_retry_secs = {first}\nawait_user_max_retry_secs = {cap}\n"
    )
}

/// SCIM reads (user lookups) the emulator answered since its last reset: every SCIM call but
/// the writes.
async fn lookups(app: &TestApp) -> u64 {
    let stats = app.emulator_stats().await;
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] != "PATCH" && r["route"].as_str().unwrap_or("").contains("/scim/"))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The item of `external_id` in job `id`.
async fn item_of(app: &TestApp, id: &str, external_id: &str) -> Value {
    app.items(id)
        .await
        .into_iter()
        .find(|i| i["external_id"] == external_id)
        .unwrap_or(Value::Null)
}

/// Polls `cond` on the item of `external_id` until it holds, or fails after `timeout`.
async fn wait_item(
    app: &TestApp,
    id: &str,
    external_id: &str,
    timeout: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let item = item_of(app, id, external_id).await;
        if cond(&item) {
            return item;
        }
        assert!(
            Instant::now() < deadline,
            "item {external_id} never came to it: {item}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The most lookups the documented schedule makes in `secs` seconds of waiting: lookups at
/// 0, first, 2·first, ... (capped), plus the one that finds the user.
fn bound(secs: f64, first: f64, cap: f64) -> u64 {
    let (mut t, mut n) = (0.0f64, 1u64);
    loop {
        let wait = t.clamp(first, cap);
        if t + wait > secs {
            return n + 1;
        }
        t += wait;
        n += 1;
    }
}

#[tokio::test]
async fn a_joiner_waits_for_their_account_and_is_applied_within_one_retry_interval_of_it() {
    let (first, cap) = (1u64, 2u64);
    let app = spawn_app_with(TestOptions {
        config: waits(600, first, cap),
        ..Default::default()
    })
    .await;
    app.seed(&[("JOIN-OLD", &[])]).await;
    let job = app
        .submit_json(json!({"assignments": [
            {"external_id": "JOIN-OLD", "role_template": "Agent", "license_tier": "Standard Agent"},
            {"external_id": "JOIN-NEW", "role_template": "Agent", "license_tier": "Standard Agent"},
        ]}))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();

    // Waiting, and shown so: the item, the job's counts, the gauge; the other user is done.
    let waiting = wait_item(&app, &id, "JOIN-NEW", Duration::from_secs(30), |i| {
        i["outcome"] == "awaiting_user"
    })
    .await;
    assert!(waiting["awaiting_since"].is_string(), "{waiting}");
    let started = Instant::now();
    app.reset_emulator_stats().await;
    let view = app.job(&id).await;
    assert_eq!(view["status"], "running", "{view}");
    assert_eq!(view["counts"]["awaiting_user"], 1, "{view}");
    assert_eq!(view["counts"]["pending"], 1, "{view}");
    // The job list says the same.
    let list: Value = app
        .get("/v1/jobs?status=running", READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    let listed = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list}"));
    assert_eq!(listed["counts"]["awaiting_user"], 1, "{listed}");
    assert_eq!(item_of(&app, &id, "JOIN-OLD").await["outcome"], "applied");
    let filtered: Value = app
        .get(
            &format!("/v1/jobs/{id}/items?outcome=awaiting_user"),
            READER_KEY,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        filtered["items"].as_array().map(Vec::len),
        Some(1),
        "{filtered}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app
            .client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("rolesync_users_awaiting_account 1") {
            break;
        }
        assert!(Instant::now() < deadline, "gauge never showed the joiner");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A few lookups miss; then the identity provider creates the account.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lookups(&app).await < 3 {
        assert!(Instant::now() < deadline, "no lookups while waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.seed(&[("JOIN-NEW", &[])]).await;
    let created = Instant::now();
    let applied = wait_item(&app, &id, "JOIN-NEW", Duration::from_secs(30), |i| {
        i["outcome"] == "applied"
    })
    .await;
    let lag = created.elapsed();
    // Within one retry interval (the cap), plus the claimer's poll and the run itself.
    assert!(
        lag <= Duration::from_secs(cap) + Duration::from_millis(1500),
        "applied {lag:?} after the account appeared"
    );
    assert_eq!(strs(&applied["roles_added"]), vec!["Agent".to_owned()]);
    assert_eq!(app.roles_of("JOIN-NEW").await.len(), 1);
    let finished = app.wait_finished(&id).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");

    // The calls spent waiting: within the documented schedule's bound for the time waited.
    let spent = lookups(&app).await;
    let waited = started.elapsed().as_secs_f64();
    let most = bound(waited, first as f64, cap as f64);
    eprintln!("waited {waited:.1} s: {spent} lookups (bound {most})");
    assert!(
        spent <= most,
        "{spent} lookups in {waited:.1} s, bound {most}"
    );
    assert_eq!(patches(&app.emulator_stats().await), 1);
}

#[tokio::test]
async fn a_wait_that_runs_out_ends_not_found_with_its_webhook() {
    let receiver = Receiver::start(crate::webhooks::Answer::Status(200)).await;
    let secret = new_secret();
    let mut app = app_with_hooks(
        &[Hook {
            name: "hr",
            url: &receiver.url,
            secret: &secret,
            previous: &[],
            events: &["role_sync.failed"],
        }],
        &format!("{FAST}{}", waits(4, 1, 1)),
    )
    .await;
    let job = app
        .submit_json(json!({"assignments": [
            {"external_id": "JOIN-NEVER", "role_template": "Agent", "license_tier": "Standard Agent"},
        ]}))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    wait_item(&app, &id, "JOIN-NEVER", Duration::from_secs(30), |i| {
        i["outcome"] == "awaiting_user"
    })
    .await;
    let started = Instant::now();
    app.reset_emulator_stats().await;
    // The wait survives a restart: it lives in the store, not in a process.
    app.restart().await;
    let finished = app.wait_finished(&id).await;
    assert_eq!(finished["status"], "completed_with_errors", "{finished}");
    assert_eq!(finished["counts"]["not_found"], 1, "{finished}");
    assert_eq!(finished["counts"]["awaiting_user"], 0, "{finished}");
    let item = item_of(&app, &id, "JOIN-NEVER").await;
    assert_eq!(item["outcome"], "not_found", "{item}");
    assert_eq!(item["reason"]["code"], "user_not_found", "{item}");
    assert!(
        item["reason"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("after waiting"),
        "{item}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "ended before its wait"
    );
    wait_until("role_sync.failed", Duration::from_secs(20), || {
        receiver.count_of("role_sync.failed") == 1
    })
    .await;
    let spent = lookups(&app).await;
    let most = bound(started.elapsed().as_secs_f64(), 1.0, 1.0);
    eprintln!(
        "expired after {:.1} s: {spent} lookups (bound {most})",
        started.elapsed().as_secs_f64()
    );
    assert!(spent <= most, "{spent} lookups, bound {most}");
    assert_eq!(patches(&app.emulator_stats().await), 0);
}
