//! The drift feed (`[drift] source = "audit"`, README, Drift) against the emulator's audit
//! trail: hand changes through SCIM and through the Authorization API found with who and when,
//! in calls proportional to the change (counted on `/emulator/stats`); rolesync's own writes
//! never reported; the fix as a reconcile over just those users; a failing feed falling back to
//! a full scan that says so; a gap beyond 14 days read through the async query after a restart;
//! a replica that died holding the feed's lease; events pushed twice; a change made by a person
//! (`changed_by.kind = "user"`); fallback scans spaced by their backoff (`backoff.rs`). Webhooks
//! are verified.

mod backoff;

use crate::helpers::{
    ADMIN_KEY, READER_KEY, TestApp, TestOptions, WRITER_KEY, csv_for, spawn_app_with, strs,
};
use base64::Engine;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOOL: (&str, &str) = ("admin-tool", "admin-tool-secret");
/// A person (an administrator) who signs in to the admin tool: their Genesys user id and name.
const PERSON: (&str, &str) = ("7d9c2b1e-0a4f-4c55-9b1e-ada000000001", "Ada Admin");
const SECRET: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DAY_MS: i64 = 86_400_000;

/// A webhook receiver that verifies every delivery's signature (Standard Webhooks) and keeps
/// the events.
struct Hooks {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Hooks {
    async fn start() -> Hooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let keep = received.clone();
        let key = base64::engine::general_purpose::STANDARD
            .decode(SECRET)
            .unwrap();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (keep, key) = (keep.clone(), key.clone());
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
                    let ok = rolesync::audit::signature::verify(
                        &key,
                        h("webhook-id"),
                        ts,
                        &body,
                        h("webhook-signature"),
                    );
                    assert!(ok, "a webhook whose signature does not verify: {body}");
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    keep.lock().unwrap().push(v);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Hooks {
            url: format!("http://{addr}/hooks"),
            received,
            stop,
        }
    }

    /// The `data` of every event of `event_type` received so far, batches unpacked.
    fn of_type(&self, event_type: &str) -> Vec<Value> {
        let all = self.received.lock().unwrap().clone();
        let mut out = Vec::new();
        for v in all {
            let events = if v["type"] == "batch" {
                v["data"]["events"].as_array().cloned().unwrap_or_default()
            } else {
                vec![v]
            };
            out.extend(
                events
                    .into_iter()
                    .filter(|e| e["type"] == event_type)
                    .map(|e| e["data"].clone()),
            );
        }
        out
    }

    async fn wait_for(&self, event_type: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.of_type(event_type);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} {event_type} expected, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn config(hooks: &Hooks, extra: &str) -> String {
    format!(
        "[[webhooks.endpoints]]\nname = \"audit\"\nurl = \"{}\"\nsecret = \"whsec_{SECRET}\"\n\
         [drift]\nsource = \"audit\"\npoll_secs = 1\n{extra}\n",
        hooks.url
    )
}

async fn start(hooks: &Hooks, extra: &str) -> TestApp {
    spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            extra_clients: vec![(TOOL.0.into(), TOOL.1.into())],
            ..EmulatorArgs::default()
        },
        config: config(hooks, extra),
        ..Default::default()
    })
    .await
}

async fn tool_token(app: &TestApp) -> String {
    crate::process::client_token(&app.emulator_url(), TOOL.0, TOOL.1).await
}

/// The emulator id of the one user with `external_id`.
async fn user_id(app: &TestApp, external_id: &str) -> String {
    let users: Value = app
        .client
        .get(format!("{}/emulator/users", app.emulator_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["externalId"] == external_id)
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .unwrap()
}

/// A token of the admin tool acting for `PERSON`: what Genesys' authorization-code grant gives
/// once the person signs in (the emulator's stand-in: `POST /emulator/tokens`).
async fn person_token(app: &TestApp) -> String {
    let v: Value = app
        .client
        .post(format!("{}/emulator/tokens", app.emulator_url()))
        .json(&json!({"user": {"id": PERSON.0, "name": PERSON.1}, "client_id": TOOL.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// An administrator's tool (its own OAuth client) sets a user's roles through SCIM.
async fn hand_patch(app: &TestApp, external_id: &str, roles: &[&str]) {
    patch_with(app, &tool_token(app).await, external_id, roles).await;
}

/// Sets a user's roles through SCIM with `token`.
async fn patch_with(app: &TestApp, token: &str, external_id: &str, roles: &[&str]) {
    let id = user_id(app, external_id).await;
    let roles: Vec<Value> = roles.iter().map(|r| json!({"value": r})).collect();
    let resp = app
        .client
        .patch(format!("{}/api/v2/scim/v2/users/{id}", app.emulator_url()))
        .bearer_auth(token)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "roles", "value": roles}],
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

/// The tool takes `role` from a user through the Authorization API (`users/remove`).
async fn hand_remove(app: &TestApp, external_id: &str, role: &str) {
    remove_with(app, &tool_token(app).await, external_id, role).await;
}

/// Takes `role` from a user through the Authorization API (`users/remove`) with `token`.
async fn remove_with(app: &TestApp, token: &str, external_id: &str, role: &str) {
    let id = user_id(app, external_id).await;
    let base = app.emulator_url();
    let roles: Value = app
        .client
        .get(format!("{base}/api/v2/authorization/roles?name={role}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let role_id = roles["entities"][0]["id"].as_str().unwrap();
    let resp = app
        .client
        .put(format!(
            "{base}/api/v2/authorization/roles/{role_id}/users/remove"
        ))
        .bearer_auth(token)
        .json(&json!([id]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

async fn emulator_post(app: &TestApp, path: &str, body: Value) {
    let resp = app
        .client
        .post(format!("{}{path}", app.emulator_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

/// Calls the emulator counted on `route` (every method and status).
fn calls(stats: &Value, route: &str) -> u64 {
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["route"] == route)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn wait_metric(app: &TestApp, series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = metric(app, series).await;
        if v >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gives Agent to `users` through a job, waits for it and for the feed to have seen rolesync's
/// own writes (and ignored them).
async fn baseline(app: &TestApp, users: &[String]) {
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &[][..])).collect();
    app.seed(&seeds).await;
    let job = app
        .submit_csv(&csv_for(users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_finished(&id).await["status"], "succeeded");
    wait_metric(
        app,
        "rolesync_drift_own_changes_ignored_total",
        users.len() as f64,
    )
    .await;
}

async fn jobs(app: &TestApp) -> Vec<Value> {
    let v: Value = app
        .get("/v1/jobs?limit=100", ADMIN_KEY)
        .await
        .json()
        .await
        .unwrap();
    v["jobs"].as_array().cloned().unwrap_or_default()
}

/// Waits for a job whose `reason` starts with `prefix`.
async fn job_with_reason(app: &TestApp, prefix: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(j) = jobs(app)
            .await
            .into_iter()
            .find(|j| j["reason"].as_str().is_some_and(|r| r.starts_with(prefix)))
        {
            return j;
        }
        assert!(Instant::now() < deadline, "no job with reason {prefix}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(n: usize, prefix: &str) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// An administrator's tool takes Agent from F2 through SCIM and from F3 through
/// `users/remove`: the feed reports both, naming the tool's client and the time, from the audit
/// query plus one read-back per user (no directory scan), and nothing of rolesync's own job.
#[tokio::test]
async fn drift_feed_reports_hand_changes_through_scim_and_the_authorization_api_with_who_and_when()
{
    let hooks = Hooks::start().await;
    let app = start(&hooks, "").await;
    let users = names(4, "F");
    baseline(&app, &users).await;
    assert!(hooks.of_type("role_sync.drift_detected").is_empty());
    app.reset_emulator_stats().await;
    let before = now_ms();
    hand_patch(&app, "F2", &["Employee"]).await;
    hand_remove(&app, "F3", "Agent").await;
    let drift = hooks.wait_for("role_sync.drift_detected", 2).await;
    let mut by_user: Vec<(String, Value)> = drift
        .iter()
        .map(|d| (d["external_id"].as_str().unwrap().to_owned(), d.clone()))
        .collect();
    by_user.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_user.len(), 2, "{drift:?}");
    for ((ext, d), want) in by_user.iter().zip(["F2", "F3"]) {
        assert_eq!(ext, want);
        assert_eq!(d["source"], "audit");
        assert_eq!(
            d["changed_by"],
            json!({"kind": "client", "id": "admin-tool"})
        );
        let at = rolesync_date(d["changed_at"].as_str().unwrap());
        assert!(at >= before - 1000, "{d}");
        assert_eq!(d["job_id"], Value::Null);
        assert_eq!(d["fixed"], false);
        assert_eq!(strs(&d["roles_added"]), vec!["Agent"]);
        assert_eq!(d["user_id"], user_id(&app, want).await.as_str());
    }
    // Calls: audit pages and one read-back per named user; no list, no write.
    let stats = app.emulator_stats().await;
    assert_eq!(calls(&stats, "/api/v2/scim/v2/users/{id}"), 3, "{stats}");
    assert_eq!(calls(&stats, "/api/v2/scim/v2/users"), 0, "{stats}");
    assert!(calls(&stats, "/api/v2/audits/query/realtime") >= 1);
    assert_eq!(
        metric(&app, "rolesync_drift_detected_total{source=\"audit\"}").await,
        2.0
    );
    // No more reports for the same changes in later polls.
    let polls = metric(&app, "rolesync_drift_polls_total{result=\"ok\"}").await;
    wait_metric(
        &app,
        "rolesync_drift_polls_total{result=\"ok\"}",
        polls + 2.0,
    )
    .await;
    assert_eq!(hooks.of_type("role_sync.drift_detected").len(), 2);
}

/// The emulator's audit messages of the last hour matching `filter` (`{property, value}`), as
/// the admin tool reads them.
async fn audit_messages(app: &TestApp, filter: Value) -> Vec<Value> {
    let token = tool_token(app).await;
    let interval = format!("{}/{}", iso(now_ms() - 3_600_000), iso(now_ms() + 60_000));
    let v: Value = app
        .client
        .post(format!(
            "{}/api/v2/audits/query/realtime",
            app.emulator_url()
        ))
        .bearer_auth(token)
        .json(&json!({"interval": interval, "filters": [filter], "pageSize": 500}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["entities"].as_array().cloned().unwrap_or_default()
}

/// A person signed in to the admin tool takes Agent from M1 through SCIM and from M2 through the
/// Authorization API: each drift event names them (`kind` user, their id and name, as the audit
/// message's `user` gives them) and the time of their change (the message's `eventDate`).
#[tokio::test]
async fn drift_made_by_a_person_names_them_and_the_time_of_their_change() {
    let hooks = Hooks::start().await;
    let app = start(&hooks, "").await;
    let users = names(3, "M");
    baseline(&app, &users).await;
    let token = person_token(&app).await;
    let before = now_ms();
    patch_with(&app, &token, "M1", &["Employee"]).await;
    remove_with(&app, &token, "M2", "Agent").await;
    let after = now_ms();
    let drift = hooks.wait_for("role_sync.drift_detected", 2).await;
    // The audit messages of the person's changes (the realtime query's `UserId` filter names the
    // person who made a change): one per user, each naming the person and the tool's client.
    let messages = audit_messages(&app, json!({"property": "UserId", "value": PERSON.0})).await;
    assert_eq!(messages.len(), 2, "{messages:#?}");
    for m in &messages {
        assert_eq!(m["user"]["id"], PERSON.0, "{m}");
        assert_eq!(m["user"]["name"], PERSON.1, "{m}");
        assert_eq!(m["client"]["id"], TOOL.0, "{m}");
    }
    let mut seen: Vec<String> = Vec::new();
    for d in &drift {
        let ext = d["external_id"].as_str().unwrap().to_owned();
        let id = user_id(&app, &ext).await;
        assert_eq!(d["user_id"], id.as_str());
        assert_eq!(d["source"], "audit");
        assert_eq!(
            d["changed_by"],
            json!({"kind": "user", "id": PERSON.0, "name": PERSON.1}),
            "{d}"
        );
        let message = messages
            .iter()
            .find(|m| m["context"]["userId"] == id.as_str())
            .unwrap_or_else(|| panic!("no audit message of {ext}: {messages:#?}"));
        assert_eq!(d["changed_at"], message["eventDate"], "{d}");
        let at = rolesync_date(d["changed_at"].as_str().unwrap());
        assert!((before..=after).contains(&at), "{d}: not within the change");
        assert_eq!(strs(&d["roles_added"]), vec!["Agent"]);
        seen.push(ext);
    }
    seen.sort();
    assert_eq!(seen, ["M1", "M2"]);
    // Reported once: later polls add nothing.
    let polls = metric(&app, "rolesync_drift_polls_total{result=\"ok\"}").await;
    wait_metric(
        &app,
        "rolesync_drift_polls_total{result=\"ok\"}",
        polls + 2.0,
    )
    .await;
    assert_eq!(hooks.of_type("role_sync.drift_detected").len(), 2);
}

/// Epoch milliseconds of an RFC 3339 date.
fn rolesync_date(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// With `drift.fix`, the drifted user is fixed by a reconcile over just them (reason
/// `drift_feed_fix`), reported once with the fix's job id; the fix's own writes are not drift.
#[tokio::test]
async fn with_fix_the_feed_reconciles_just_the_users_it_found() {
    let hooks = Hooks::start().await;
    let app = start(&hooks, "fix = true").await;
    let users = names(3, "G");
    baseline(&app, &users).await;
    hand_patch(&app, "G2", &["Employee"]).await;
    let job = job_with_reason(&app, "drift_feed_fix").await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["kind"], "reconcile");
    assert_eq!(done["dry_run"], false);
    let items = app.items(&id).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["external_id"], "G2");
    assert_eq!(app.roles_of("G2").await, vec![vec!["Agent", "Employee"]]);
    let drift = hooks.wait_for("role_sync.drift_detected", 1).await;
    assert_eq!(drift[0]["job_id"], id.as_str());
    assert_eq!(drift[0]["fixed"], true);
    // The fix is rolesync's own write: ignored by the next polls.
    let own = metric(&app, "rolesync_drift_own_changes_ignored_total").await;
    wait_metric(&app, "rolesync_drift_own_changes_ignored_total", own + 1.0).await;
    let polls = metric(&app, "rolesync_drift_polls_total{result=\"ok\"}").await;
    wait_metric(
        &app,
        "rolesync_drift_polls_total{result=\"ok\"}",
        polls + 2.0,
    )
    .await;
    assert_eq!(hooks.of_type("role_sync.drift_detected").len(), 1);
    let fixes = jobs(&app)
        .await
        .into_iter()
        .filter(|j| {
            j["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("drift_feed"))
        })
        .count();
    assert_eq!(fixes, 1);
}

/// The audit API refuses (the permission withheld): the feed falls back to a full scan, a
/// reconcile whose reason says so, counted by its metric; the scan finds the hand change.
#[tokio::test]
async fn a_failing_feed_falls_back_to_a_full_scan_and_says_so() {
    let hooks = Hooks::start().await;
    let app = start(&hooks, "").await;
    let users = names(3, "H");
    baseline(&app, &users).await;
    emulator_post(
        &app,
        "/emulator/faults",
        json!({"missing_permissions": ["audits:audit:view"]}),
    )
    .await;
    hand_patch(&app, "H1", &["Employee"]).await;
    let job = job_with_reason(&app, "drift_feed_fallback: feed_failed").await;
    assert!(
        job["reason"]
            .as_str()
            .unwrap()
            .contains("audits:audit:view"),
        "{job}"
    );
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["dry_run"], true, "a report, as drift.fix is false");
    assert_eq!(app.items(&id).await.len(), 3, "every managed user");
    let drift = hooks.wait_for("role_sync.drift_detected", 1).await;
    assert_eq!(drift[0]["external_id"], "H1");
    assert_eq!(drift[0]["source"], "scan");
    assert!(
        metric(
            &app,
            "rolesync_drift_fallback_scans_total{cause=\"feed_failed\"}"
        )
        .await
            >= 1.0
    );
}

/// rolesync is down for 20 days: its checkpoint and the hand change are older than the realtime
/// query reaches. After the restart the feed reads the gap through the async query and reports
/// the change with its original time; then it polls in realtime again.
#[tokio::test]
async fn a_gap_beyond_14_days_is_read_through_the_async_query_after_a_restart() {
    let hooks = Hooks::start().await;
    let mut app = start(&hooks, "").await;
    let users = names(2, "K");
    baseline(&app, &users).await;
    app.stop_service().await;
    hand_patch(&app, "K2", &["Employee"]).await;
    // 20 days pass: the emulator's messages and rolesync's checkpoint move 20 days back.
    emulator_post(
        &app,
        "/emulator/audits",
        json!({"backdate_secs": 20 * 86_400, "query_polls": 2}),
    )
    .await;
    app.store_exec(&format!(
        "UPDATE drift_feed SET checkpoint_ms = checkpoint_ms - {}, owner = NULL",
        20 * DAY_MS
    ))
    .await;
    app.reset_emulator_stats().await;
    app.restart().await;
    let drift = hooks.wait_for("role_sync.drift_detected", 1).await;
    assert_eq!(drift[0]["external_id"], "K2");
    let at = rolesync_date(drift[0]["changed_at"].as_str().unwrap());
    assert!(at < now_ms() - 19 * DAY_MS, "{drift:?}");
    let stats = app.emulator_stats().await;
    assert_eq!(calls(&stats, "/api/v2/audits/query"), 1, "{stats}");
    assert!(calls(&stats, "/api/v2/audits/query/{transactionId}") >= 3);
    assert!(calls(&stats, "/api/v2/audits/query/{transactionId}/results") >= 1);
    // Caught up: the next polls are realtime.
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls(&app.emulator_stats().await, "/api/v2/audits/query/realtime") == 0 {
        assert!(
            Instant::now() < deadline,
            "no realtime poll after the catch-up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hooks.of_type("role_sync.drift_detected").len(), 1);
}

/// A replica died while polling: its lease on the feed is left in the store, unexpired, and its
/// checkpoint unmoved. No other replica polls until the lease expires; then the change made
/// meanwhile is reported once. Two live replicas share the feed without reporting twice.
#[tokio::test]
async fn a_replica_killed_while_polling_loses_no_change_and_two_never_both_report() {
    let hooks = Hooks::start().await;
    let app = start(&hooks, "").await;
    let second = app.replica().await;
    let users = names(2, "R");
    baseline(&app, &users).await;
    let until = now_ms() + 4_000;
    app.store_exec(&format!(
        "UPDATE drift_feed SET owner = 'a-replica-that-died', lease_until_ms = {until}"
    ))
    .await;
    hand_patch(&app, "R1", &["Employee"]).await;
    let drift = hooks.wait_for("role_sync.drift_detected", 1).await;
    assert!(
        now_ms() >= until,
        "reported before the dead replica's lease expired"
    );
    assert_eq!(drift[0]["external_id"], "R1");
    hand_patch(&app, "R2", &["Employee"]).await;
    hooks.wait_for("role_sync.drift_detected", 2).await;
    let polls = metric(&app, "rolesync_drift_polls_total{result=\"ok\"}").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&app, "rolesync_drift_polls_total{result=\"ok\"}").await < polls + 2.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hooks.of_type("role_sync.drift_detected").len(), 2);
    second.stop().await;
}

fn pushed(id: &str, message: &Value) -> Value {
    json!({
        "version": "0", "id": id,
        "detail-type": "v2.audits.entitytype.{id}.entityid.{id}",
        "source": "aws.partner/genesys.com/cloud/org/rolesync",
        "time": "2026-12-06T14:02:00Z",
        "detail": {"topicName": "v2.audits.entitytype.Role.entityid.x", "eventBody": message},
    })
}

/// An EventBridge event carrying the hand change's audit message, pushed twice: handled once
/// (one drift event, `duplicate` the second time). Bad bodies are 4xx naming the field; the
/// scope is `events:write`.
#[tokio::test]
async fn events_pushed_twice_are_handled_once() {
    let hooks = Hooks::start().await;
    let app = start(&hooks, "").await;
    let users = names(2, "P");
    baseline(&app, &users).await;
    // The poller is stopped: only pushes report from here.
    let mut app = app;
    app.stop_service().await;
    app.extra_toml = config(&hooks, "").replace("poll_secs = 1", "poll_secs = 86400");
    app.restart().await;
    // Its first poll happens at start; the next one a day later.
    wait_metric(&app, "rolesync_drift_polls_total{result=\"ok\"}", 1.0).await;
    hand_patch(&app, "P2", &["Employee"]).await;
    let token = tool_token(&app).await;
    let q: Value = app
        .client
        .post(format!(
            "{}/api/v2/audits/query/realtime",
            app.emulator_url()
        ))
        .bearer_auth(token)
        .json(
            &json!({"interval": format!("{}/{}", iso(now_ms() - 3_600_000), iso(now_ms() + 60_000)),
            "filters": [{"property": "ClientId", "value": "admin-tool"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = q["entities"][0].clone();
    assert_eq!(message["action"], "MemberRemove", "{q}");
    let event = pushed("eb-1", &message);
    let push = |key: &'static str, body: String| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/v1/events/genesys", app.address))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = push(ADMIN_KEY, event.to_string()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"event_id": "eb-1", "result": "accepted", "drifted": 1})
    );
    let r = push(ADMIN_KEY, event.to_string()).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "duplicate");
    let drift = hooks.wait_for("role_sync.drift_detected", 1).await;
    assert_eq!(drift[0]["external_id"], "P2");
    assert_eq!(drift[0]["changed_by"]["id"], "admin-tool");
    // Bad input: 4xx problem+json naming the field.
    for (body, field) in [
        ("not json".to_owned(), "body"),
        (json!({"detail": {"eventBody": {}}}).to_string(), "id"),
        (
            json!({"id": "x", "detail": {}}).to_string(),
            "detail.eventBody",
        ),
        (json!([1, 2]).to_string(), "body"),
    ] {
        let r = push(ADMIN_KEY, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    assert_eq!(push(READER_KEY, event.to_string()).await.status(), 403);
    assert_eq!(push(WRITER_KEY, event.to_string()).await.status(), 403);
    let r = push(ADMIN_KEY, "x".repeat(300 * 1024)).await;
    assert_eq!(r.status(), 413);
}

fn iso(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}
