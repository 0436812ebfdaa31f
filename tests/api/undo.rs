//! Undo a job and catch drift, end to end: reverts and reconciles against the emulator, with
//! hand changes made through its SCIM API between jobs (as an admin would in Genesys), the SCIM
//! calls counted on `/emulator/stats`, webhooks caught by a small receiver, and the scheduled
//! reconcile on two replicas of one PostgreSQL store.

use crate::helpers::*;
use rolesync::configuration::Settings;
use rolesync::policy::Policy;
use rolesync::startup::Application;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

// ----- helpers -------------------------------------------------------------------------------

/// `POST /v1/jobs/{id}/revert{query}` as the HR key; the answer's status and body.
pub(crate) async fn revert(app: &TestApp, id: &str, query: &str) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}/v1/jobs/{id}/revert{query}", app.address))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/reconcile` with `body` as the HR key; the answer's status and body.
async fn reconcile(app: &TestApp, body: Value) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}/v1/reconcile", app.address))
        .bearer_auth(WRITER_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn id_of(job: &Value) -> String {
    job["job_id"].as_str().unwrap().to_owned()
}

/// Sets a user's roles by hand through the emulator's SCIM API, as rolesync's own client, as
/// an admin changing roles in Genesys between two jobs would.
async fn hand_set_roles(app: &TestApp, external_id: &str, roles: &[&str]) {
    let token = app.emulator_token().await;
    crate::process::set_roles_by_hand(&app.emulator_url(), &token, external_id, roles).await;
}

/// SCIM calls the emulator received since the last reset (every route of the SCIM API).
async fn scim_calls(app: &TestApp) -> u64 {
    let stats = app.emulator_stats().await;
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["route"].as_str().unwrap_or("").contains("/scim/"))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

fn items_of(items: &[Value]) -> std::collections::BTreeMap<String, Value> {
    items
        .iter()
        .map(|i| {
            (
                i["external_id"].as_str().unwrap_or("").to_owned(),
                i.clone(),
            )
        })
        .collect()
}

/// The value of a counter series on a replica's `/metrics` (0 when absent).
async fn metric(app_url: &str, client: &reqwest::Client, series: &str) -> f64 {
    let text = client
        .get(format!("{app_url}/metrics"))
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

/// A webhook receiver on 127.0.0.1:0 that answers 200 and keeps every body and its headers.
struct Hooks {
    url: String,
    received: Arc<Mutex<Vec<(Value, axum::http::HeaderMap)>>>,
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
        let received: Arc<Mutex<Vec<(Value, axum::http::HeaderMap)>>> = Arc::default();
        let keep = received.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let keep = keep.clone();
                async move {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    keep.lock().unwrap().push((v, headers));
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

    /// The `data` of every event of `event_type` received so far.
    fn of_type(&self, event_type: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| v["type"] == event_type)
            .map(|(v, h)| {
                // Signed like every other event (Standard Webhooks headers).
                assert!(h.contains_key("webhook-id") && h.contains_key("webhook-signature"));
                v["data"].clone()
            })
            .collect()
    }

    /// Waits until `n` events of `event_type` arrived (30 s at most).
    async fn wait_for(&self, event_type: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.of_type(event_type);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} {event_type} events expected, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn webhook_config(url: &str) -> String {
    format!(
        "[[webhooks.endpoints]]\nname = \"audit\"\nurl = \"{url}\"\nsecret = \"whsec_{}\"\n",
        base64_secret()
    )
}

fn base64_secret() -> &'static str {
    // 24 bytes, base64.
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
}

/// The desired state a store holds for a user: (roles, the job that set them).
async fn desired(app: &TestApp, external_id: &str) -> Option<(Option<Vec<String>>, String)> {
    let store = rolesync::store::Store::connect(app.store_url(), 2)
        .await
        .unwrap();
    let d = store.desired_state(external_id).await.unwrap();
    store.close().await;
    d.map(|(roles, job)| {
        (
            roles.map(|mut r| {
                r.sort();
                r
            }),
            job,
        )
    })
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

// ----- revert --------------------------------------------------------------------------------

/// A merge job gives Agent to three users (one already has it). An admin grants Supervisor by
/// hand to one of the two it changed. The revert puts the other back, leaves the changed one
/// alone (`changed_since`, naming Supervisor), and reads the users as any job would. A revert
/// of the revert gives Agent back; a forced revert then removes Agent from both, on top of the
/// hand grant.
#[tokio::test]
async fn revert_after_a_merge_job_with_a_user_changed_since_then_revert_of_revert_and_force() {
    // Removal bounds off: each revert takes Agent from most of this 3-user org, and approval is
    // the subject of the next test.
    let app = spawn_app_with(TestOptions {
        policy: include_str!("../../config/policy.toml")
            .replace("max_removal_fraction = 0.2", "max_removal_fraction = 1.0"),
        ..Default::default()
    })
    .await;
    app.seed(&[("M1", &[]), ("M2", &["Reporting"]), ("M3", &["Agent"])])
        .await;
    let job = app
        .submit_csv(&csv_for(
            &["M1".into(), "M2".into(), "M3".into()],
            "Agent",
            "Supervisor",
        ))
        .await;
    let original = id_of(&job);
    assert_eq!(app.wait_finished(&original).await["status"], "succeeded");
    assert_eq!(
        desired(&app, "M3").await,
        Some((Some(sorted(&["Agent"])), original.clone())),
        "a user found already right holds the job's desired set too"
    );
    hand_set_roles(
        &app,
        "M2",
        &["Employee", "Reporting", "Agent", "Supervisor"],
    )
    .await;

    app.reset_emulator_stats().await;
    let (status, rev) = revert(&app, &original, "").await;
    assert_eq!(status, 202, "{rev}");
    assert_eq!(rev["kind"], "revert");
    assert_eq!(rev["original_job_id"], original.as_str());
    assert_eq!(rev["force"], false);
    let rev_id = id_of(&rev);
    let done = app.wait_finished(&rev_id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(app.job(&original).await["reverted_by"], rev_id.as_str());

    // Only the users the job changed: M3 (unchanged) is not in the revert.
    let items = items_of(&app.items(&rev_id).await);
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items["M1"]["outcome"], "applied");
    assert_eq!(strs(&items["M1"]["roles_removed"]), vec!["Agent"]);
    assert_eq!(items["M2"]["outcome"], "rejected");
    assert_eq!(items["M2"]["reason"]["code"], "changed_since");
    let detail = items["M2"]["reason"]["message"].as_str().unwrap();
    assert!(detail.contains("added since: \"Supervisor\""), "{detail}");
    assert_eq!(app.roles_of("M1").await, vec![vec!["Employee"]]);
    assert_eq!(
        app.roles_of("M2").await,
        vec![vec!["Agent", "Employee", "Reporting", "Supervisor"]]
    );
    assert_eq!(app.roles_of("M3").await, vec![vec!["Agent", "Employee"]]);
    // M1's desired state goes back to what it was before the job (none); M2's stays the job's.
    assert_eq!(desired(&app, "M1").await, Some((None, rev_id.clone())));
    assert_eq!(
        desired(&app, "M2").await,
        Some((Some(sorted(&["Agent"])), original.clone()))
    );

    // SCIM calls: the same read strategy as any job. The org (3 users) fits one page: the
    // probe that sizes it is the whole scan (1 call), then one PATCH for M1. Nothing else.
    assert_eq!(done["estimate"]["strategy"], "scan", "{done}");
    assert_eq!(done["scim"]["requests"], 2, "{done}");
    assert_eq!(scim_calls(&app).await, 2);

    // A revert of the revert gives M1 Agent back.
    let (status, rev2) = revert(&app, &rev_id, "").await;
    assert_eq!(status, 202, "{rev2}");
    let done2 = app.wait_finished(&id_of(&rev2)).await;
    assert_eq!(done2["status"], "succeeded", "{done2}");
    assert_eq!(app.roles_of("M1").await, vec![vec!["Agent", "Employee"]]);
    assert_eq!(
        desired(&app, "M1").await,
        Some((Some(sorted(&["Agent"])), id_of(&rev2)))
    );

    // Forced: the inverse delta on top of what each holds now (Agent goes, the hand grant stays).
    let (status, forced) = revert(&app, &original, "?force=true").await;
    assert_eq!(status, 202, "{forced}");
    assert_eq!(forced["force"], true);
    let done3 = app.wait_finished(&id_of(&forced)).await;
    assert_eq!(done3["status"], "succeeded", "{done3}");
    assert_eq!(app.roles_of("M1").await, vec![vec!["Employee"]]);
    assert_eq!(
        app.roles_of("M2").await,
        vec![vec!["Employee", "Reporting", "Supervisor"]]
    );
    let items = items_of(&app.items(&id_of(&forced)).await);
    assert_eq!(
        strs(&items["M2"]["roles_before"]),
        sorted(&["Agent", "Employee", "Reporting", "Supervisor"])
    );
    assert_eq!(
        strs(&items["M2"]["roles_after"]),
        sorted(&["Employee", "Reporting", "Supervisor"])
    );
}

/// A replace job takes three roles and gives one; it waits for approval (removals), as its
/// revert does, which gives the three back and takes the one away. A dry run of the revert
/// plans that and writes nothing. Refusals: a dry run, an unknown job.
#[tokio::test]
async fn revert_after_a_replace_job_waits_for_approval_like_any_job_and_dry_runs() {
    let app = spawn_app().await;
    app.seed(&[("P1", &["Supervisor", "Agent", "Reporting", "Wrap Up"])])
        .await;
    let resp = app
        .submit(
            "text/csv",
            "?mode=replace",
            "external_id,role_template,license_tier\nP1,Queue Member,Standard Agent\n",
        )
        .await;
    assert_eq!(resp.status(), 202);
    let original = id_of(&resp.json::<Value>().await.unwrap());
    let held = app.wait_for(&original, &["awaiting_approval"]).await;
    assert_eq!(held["approval"]["reasons"], json!(["removals"]), "{held}");
    assert_eq!(
        app.post(&format!("/v1/jobs/{original}/approve"), ADMIN_KEY)
            .await
            .status(),
        200
    );
    assert_eq!(app.wait_finished(&original).await["status"], "succeeded");
    assert_eq!(
        app.roles_of("P1").await,
        vec![vec!["Agent", "Employee", "Queue Member"]]
    );

    // A dry run: planned, nothing written, the original not marked reverted.
    app.reset_emulator_stats().await;
    let (status, dry) = revert(&app, &original, "?dry_run=true").await;
    assert_eq!(status, 202, "{dry}");
    let dry_done = app.wait_finished(&id_of(&dry)).await;
    assert_eq!(dry_done["status"], "succeeded", "{dry_done}");
    let items = app.items(&id_of(&dry)).await;
    assert_eq!(items[0]["outcome"], "planned");
    assert_eq!(
        strs(&items[0]["roles_added"]),
        vec!["Reporting", "Supervisor", "Wrap Up"]
    );
    assert_eq!(strs(&items[0]["roles_removed"]), vec!["Queue Member"]);
    assert_eq!(patches(&app.emulator_stats().await), 0);
    assert!(app.job(&original).await["reverted_by"].is_null());

    // A dry run cannot be reverted; an unknown job is 404; both as problems.
    let (status, problem) = revert(&app, &id_of(&dry), "").await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("dry run"));
    let (status, _) = revert(&app, "no-such-job", "").await;
    assert_eq!(status, 404);
    let (status, problem) = revert(&app, &original, "?force=maybe").await;
    assert_eq!(status, 400, "{problem}");

    // The real revert takes a role away from the whole org (1 user): approval, as for any job.
    let (status, rev) = revert(&app, &original, "").await;
    assert_eq!(status, 202, "{rev}");
    let rev_id = id_of(&rev);
    let held = app.wait_for(&rev_id, &["awaiting_approval"]).await;
    assert_eq!(held["approval"]["reasons"], json!(["removals"]), "{held}");
    assert_eq!(held["approval"]["users_losing_roles"], 1, "{held}");
    // While it runs, the job cannot be reverted again.
    let (status, problem) = revert(&app, &original, "").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        app.post(&format!("/v1/jobs/{rev_id}/approve"), ADMIN_KEY)
            .await
            .status(),
        200
    );
    assert_eq!(app.wait_finished(&rev_id).await["status"], "succeeded");
    assert_eq!(
        app.roles_of("P1").await,
        vec![vec![
            "Agent",
            "Employee",
            "Reporting",
            "Supervisor",
            "Wrap Up"
        ]]
    );
}

// ----- reconcile ------------------------------------------------------------------------------

/// A job gives Agent to four users. By hand: D2 loses Agent, D3 gains Reporting. A merge dry
/// run names D2 alone (planned, Agent to add), writes nothing, sends one drift webhook and
/// counts one drifted user; a replace dry run names D2 and D3. A real merge reconcile fixes
/// D2. SCIM calls: one directory page each (the org fits one page), plus the fix.
#[tokio::test]
async fn reconcile_dry_run_names_exactly_the_drifted_users_and_a_real_one_fixes_them() {
    let hooks = Hooks::start().await;
    let app = spawn_app_with(TestOptions {
        config: webhook_config(&hooks.url),
        ..Default::default()
    })
    .await;
    let users: Vec<String> = (1..=4).map(|i| format!("D{i}")).collect();
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &[][..])).collect();
    app.seed(&seeds).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    assert_eq!(app.wait_finished(&id_of(&job)).await["status"], "succeeded");
    hand_set_roles(&app, "D2", &["Employee"]).await;
    hand_set_roles(&app, "D3", &["Employee", "Agent", "Reporting"]).await;

    app.reset_emulator_stats().await;
    let (status, dry) = reconcile(&app, json!({"dry_run": true, "mode": "merge"})).await;
    assert_eq!(status, 202, "{dry}");
    assert_eq!(dry["kind"], "reconcile");
    let done = app.wait_finished(&id_of(&dry)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let items = items_of(&app.items(&id_of(&dry)).await);
    let planned: Vec<&String> = items
        .iter()
        .filter(|(_, i)| i["outcome"] == "planned")
        .map(|(u, _)| u)
        .collect();
    assert_eq!(planned, vec!["D2"], "{items:?}");
    assert_eq!(strs(&items["D2"]["roles_added"]), vec!["Agent"]);
    for u in ["D1", "D3", "D4"] {
        assert_eq!(items[u]["outcome"], "unchanged", "{u}: {:?}", items[u]);
    }
    assert_eq!(
        patches(&app.emulator_stats().await),
        0,
        "a dry run writes nothing"
    );
    assert_eq!(done["scim"]["requests"], 1, "{done}");
    assert_eq!(scim_calls(&app).await, 1);
    let drift = hooks.wait_for("role_sync.drift_detected", 1).await;
    assert_eq!(drift[0]["external_id"], "D2");
    assert_eq!(drift[0]["fixed"], false);
    assert_eq!(drift[0]["roles_added"], json!(["Agent"]));
    assert_eq!(
        metric(
            &app.address,
            &app.client,
            "rolesync_reconcile_drifted_users_total"
        )
        .await,
        1.0
    );

    let (status, dry) = reconcile(&app, json!({"dry_run": true, "mode": "replace"})).await;
    assert_eq!(status, 202, "{dry}");
    app.wait_finished(&id_of(&dry)).await;
    let items = items_of(&app.items(&id_of(&dry)).await);
    let planned: Vec<&String> = items
        .iter()
        .filter(|(_, i)| i["outcome"] == "planned")
        .map(|(u, _)| u)
        .collect();
    assert_eq!(planned, vec!["D2", "D3"], "{items:?}");
    assert_eq!(strs(&items["D3"]["roles_removed"]), vec!["Reporting"]);

    app.reset_emulator_stats().await;
    let (status, fix) = reconcile(&app, json!({"dry_run": false, "mode": "merge"})).await;
    assert_eq!(status, 202, "{fix}");
    let done = app.wait_finished(&id_of(&fix)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["users"]["changed"], 1, "{done}");
    assert_eq!(app.roles_of("D2").await, vec![vec!["Agent", "Employee"]]);
    assert_eq!(
        app.roles_of("D3").await,
        vec![vec!["Agent", "Employee", "Reporting"]],
        "merge never takes a role away"
    );
    // One directory page and one PATCH.
    assert_eq!(done["scim"]["requests"], 2, "{done}");
    assert_eq!(scim_calls(&app).await, 2);
    let drift = hooks.wait_for("role_sync.drift_detected", 4).await;
    assert!(
        drift
            .iter()
            .any(|d| d["external_id"] == "D2" && d["fixed"] == true)
    );
    // The fix is a write like any other: completed event, revertable.
    let completed = hooks.wait_for("role_sync.completed", 5).await;
    assert!(
        completed
            .iter()
            .any(|c| c["job_id"] == id_of(&fix).as_str())
    );
}

/// One reconcile at a time: a second one is refused (409) while the first waits for approval;
/// a bad body is a 400 naming the problem.
#[tokio::test]
async fn a_second_reconcile_waits_for_the_first_and_bad_bodies_are_refused() {
    let app = spawn_app().await;
    app.seed(&[("Q1", &[]), ("Q2", &[])]).await;
    let job = app
        .submit_csv(&csv_for(
            &["Q1".into(), "Q2".into()],
            "Agent",
            "Standard Agent",
        ))
        .await;
    app.wait_finished(&id_of(&job)).await;
    hand_set_roles(&app, "Q1", &["Employee", "Agent", "Reporting"]).await;
    // A replace reconcile would take Reporting from 1 user of 2: above the policy's 20 %.
    let (status, first) = reconcile(&app, json!({"mode": "replace"})).await;
    assert_eq!(status, 202, "{first}");
    let held = app.wait_for(&id_of(&first), &["awaiting_approval"]).await;
    assert_eq!(held["approval"]["reasons"], json!(["removals"]), "{held}");
    let (status, problem) = reconcile(&app, json!({"dry_run": true})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(&id_of(&first)),
        "{problem}"
    );
    for bad in [
        json!({"mode": "sideways"}),
        json!({"dry_run": "yes"}),
        json!({"extra": 1}),
    ] {
        let (status, problem) = reconcile(&app, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with("body:"),
            "{problem}"
        );
    }
    let reader = app
        .client
        .post(format!("{}/v1/reconcile", app.address))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
    assert_eq!(
        app.post(&format!("/v1/jobs/{}/cancel", id_of(&first)), WRITER_KEY)
            .await
            .status(),
        200
    );
    app.wait_finished(&id_of(&first)).await;
    let (status, next) = reconcile(&app, json!({"dry_run": true})).await;
    assert_eq!(status, 202, "{next}");
}

// ----- the schedule ---------------------------------------------------------------------------

/// A replica of `app`'s service (same store, same emulator) with `extra` settings, in this
/// process; its address, and the token that stops it.
async fn replica(app: &TestApp, extra: &str) -> (String, CancellationToken) {
    let settings = Settings::from_toml_layers(&[&app.settings_toml, &app.extra_toml, extra])
        .expect("valid replica settings");
    let policy = Policy::from_toml_str(&app.policy).expect("policy");
    let application = Application::build_with_policy(settings, policy, None)
        .await
        .expect("replica builds");
    let address = format!("http://{}", application.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(application.run_until_stopped(async move { s.cancelled().await }));
    (address, stop)
}

/// Two replicas on one PostgreSQL store, both with the same schedule (one occurrence, a few
/// seconds ahead): exactly one of them fires it (the other finds it taken), and exactly one
/// reconcile runs, a dry run that names the drifted user.
#[tokio::test]
async fn the_schedule_fires_once_across_two_replicas_on_postgresql() {
    if std::env::var("TEST_DATABASE_URL")
        .map(|v| v.is_empty())
        .unwrap_or(true)
    {
        println!(
            "SKIPPED the_schedule_fires_once_across_two_replicas_on_postgresql: needs \
             TEST_DATABASE_URL (two replicas share a PostgreSQL store; SQLite is one process's)"
        );
        return;
    }
    let app = spawn_app().await;
    app.seed(&[("S1", &[]), ("S2", &[])]).await;
    let job = app
        .submit_csv(&csv_for(
            &["S1".into(), "S2".into()],
            "Agent",
            "Standard Agent",
        ))
        .await;
    app.wait_finished(&id_of(&job)).await;
    hand_set_roles(&app, "S2", &["Employee"]).await;
    // One occurrence, 8 s ahead (UTC), the same on both replicas.
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(8);
    let schedule = format!(
        "[reconcile]\nschedule = \"{} {} {} * * *\"\n",
        at.second(),
        at.minute(),
        at.hour()
    );
    let (a, stop_a) = replica(&app, &schedule).await;
    let (b, stop_b) = replica(&app, &schedule).await;
    let series = |r: &str| format!("rolesync_reconcile_schedule_runs_total{{result=\"{r}\"}}");
    let deadline = Instant::now() + Duration::from_secs(40);
    let seen = loop {
        let mut seen = Vec::new();
        for url in [&a, &b] {
            let mut per = Vec::new();
            for r in ["fired", "taken", "skipped", "error"] {
                per.push(metric(url, &app.client, &series(r)).await);
            }
            seen.push(per);
        }
        if seen.iter().all(|per| per.iter().sum::<f64>() >= 1.0) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the occurrence never came: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fired = seen[0][0] + seen[1][0];
    let taken = seen[0][1] + seen[1][1];
    assert_eq!((fired, taken), (1.0, 1.0), "{seen:?}");
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    let reconciles: Vec<&Value> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "reconcile")
        .collect();
    assert_eq!(reconciles.len(), 1, "{list}");
    let id = id_of(reconciles[0]);
    assert_eq!(reconciles[0]["dry_run"], true, "fix = false by default");
    app.wait_finished(&id).await;
    let items = items_of(&app.items(&id).await);
    assert_eq!(items["S2"]["outcome"], "planned");
    assert_eq!(items["S1"]["outcome"], "unchanged");
    stop_a.cancel();
    stop_b.cancel();
}
