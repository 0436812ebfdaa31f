//! The sync engine's calls, counted at the emulator: read strategy (scan or lookups), filter
//! escaping, both target profiles with version conflicts, per-user and job-wide refusals,
//! token expiry and pacing.

use crate::helpers::*;
use genesys_cloud_emulator::{EmulatorArgs, Profile};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `EMP-000001`… as the emulator's `--users N` seeds them.
fn emp(i: usize) -> String {
    format!("EMP-{i:06}")
}

fn csv_rows(ids: impl IntoIterator<Item = String>, role: &str, tier: &str) -> String {
    std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain(ids.into_iter().map(|u| format!("{u},{role},{tier}")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// SCIM calls seen by the emulator: (method, route suffix after `/scim/v2`, status) → count.
async fn scim_calls(app: &TestApp) -> Vec<(String, String, u64, u64)> {
    let stats = app.emulator_stats().await;
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let route = r["route"].as_str()?;
            let rest = route.strip_prefix("/api/v2/scim/v2")?;
            Some((
                r["method"].as_str()?.to_owned(),
                rest.to_owned(),
                r["status"].as_u64()?,
                r["count"].as_u64()?,
            ))
        })
        .collect()
}

fn count(calls: &[(String, String, u64, u64)], method: &str, route: &str) -> u64 {
    calls
        .iter()
        .filter(|(m, r, _, _)| m == method && r == route)
        .map(|c| c.3)
        .sum()
}

fn count_status(calls: &[(String, String, u64, u64)], method: &str, status: u64) -> u64 {
    calls
        .iter()
        .filter(|(m, _, s, _)| m == method && *s == status)
        .map(|c| c.3)
        .sum()
}

fn total(calls: &[(String, String, u64, u64)]) -> u64 {
    calls.iter().map(|c| c.3).sum()
}

fn org(users: u64) -> TestOptions {
    TestOptions {
        emulator: EmulatorArgs {
            users,
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_job_covering_most_of_the_org_scans_it_in_pages() {
    let app = spawn_app_with(org(200)).await;
    let job = app
        .submit_csv(&csv_rows((1..=150).map(emp), "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 150);
    let est = &done["estimate"];
    assert_eq!(est["strategy"], "scan", "{done}");
    assert_eq!(est["org_users"], 200);
    assert_eq!(est["page_size"], 100, "filter.maxResults of the emulator");
    assert_eq!(est["scan_pages"], 2);
    // ServiceProviderConfig once, then 2 pages: 3 reads instead of 150 lookups.
    assert_eq!(est["reads"], 3, "{done}");
    assert_eq!(est["writes_max"], 150);

    let calls = scim_calls(&app).await;
    assert_eq!(
        count(&calls, "GET", "/serviceproviderconfig"),
        1,
        "{calls:?}"
    );
    assert_eq!(count(&calls, "GET", "/users"), 2, "{calls:?}");
    assert_eq!(count(&calls, "GET", "/users/{id}"), 0, "{calls:?}");
    assert_eq!(count(&calls, "PATCH", "/users/{id}"), 150, "{calls:?}");
    assert_eq!(total(&calls), 153, "{calls:?}");
    assert_eq!(done["scim"]["requests"], 153, "{done}");
    for i in [1, 75, 150] {
        assert_eq!(app.roles_of(&emp(i)).await, vec![vec!["Agent", "Employee"]]);
    }
    assert_eq!(app.roles_of(&emp(151)).await, vec![vec!["Employee"]]);

    // A second full job: every user already right, the scan alone decides it (2 pages, no
    // ServiceProviderConfig again, no write).
    let job = app
        .submit_csv(&csv_rows((1..=150).map(emp), "Agent", "Standard Agent"))
        .await;
    let again = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(again["counts"]["unchanged"], 150, "{again}");
    assert_eq!(again["scim"]["requests"], 2, "{again}");
}

/// The scan is kept in the store, not in the planner's memory: a process started after the
/// planning (a restart here; another replica on PostgreSQL alike) runs the remaining chunks
/// from it without looking anyone up, and the scan is deleted once the job has ended.
#[tokio::test]
async fn the_scan_outlives_the_process_that_planned_and_goes_with_the_job() {
    let mut app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            users: 300,
            rate_limit_per_minute: 0,
            latency_ms: 30,
            ..Default::default()
        },
        config: "[target]\nmax_concurrency = 2\n".into(),
        ..Default::default()
    })
    .await;
    let job = app
        .submit_csv(&csv_rows((1..=250).map(emp), "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = app.job(&id).await;
        let applied = j["counts"]["applied"].as_u64().unwrap_or(0);
        if applied >= 20 {
            assert!(
                applied < 200,
                "the job ran too fast to restart in its middle: {j}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the job did not start: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scanned = app
        .store_count(&format!(
            "SELECT COUNT(*) FROM directory_snapshot WHERE job_id = '{id}'"
        ))
        .await;
    assert_eq!(
        scanned, 250,
        "the scan keeps the job's users, not the org's"
    );
    app.restart().await;
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 250);
    assert_eq!(done["estimate"]["strategy"], "scan", "{done}");
    let calls = scim_calls(&app).await;
    // The 3 pages of the scan and nothing else: no user looked up after the restart.
    assert_eq!(count(&calls, "GET", "/users"), 3, "{calls:?}");
    assert_eq!(count(&calls, "PATCH", "/users/{id}"), 250, "{calls:?}");
    for i in [1, 125, 250] {
        assert_eq!(app.roles_of(&emp(i)).await, vec![vec!["Agent", "Employee"]]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .store_count("SELECT COUNT(*) FROM directory_snapshot")
        .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the ended job's scan is still stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_small_job_in_a_big_org_looks_its_users_up() {
    let app = spawn_app_with(org(2000)).await;
    let job = app
        .submit_csv(&csv_rows((1..=5).map(emp), "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let est = &done["estimate"];
    assert_eq!(est["strategy"], "lookup", "{done}");
    assert_eq!(est["org_users"], 2000);
    // ServiceProviderConfig and the probe (which is also the first page), then 5 lookups:
    // 20 pages would cost more.
    assert_eq!(est["reads"], 7, "{done}");
    let calls = scim_calls(&app).await;
    assert_eq!(count(&calls, "GET", "/users"), 6, "{calls:?}");
    assert_eq!(count(&calls, "PATCH", "/users/{id}"), 5, "{calls:?}");
    assert_eq!(done["scim"]["requests"], 12, "{done}");

    // The org size is known now: the next small job does not probe again.
    let job = app
        .submit_csv(&csv_rows((6..=10).map(emp), "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["estimate"]["strategy"], "lookup");
    assert_eq!(done["estimate"]["reads"], 5, "{done}");
    assert_eq!(done["scim"]["requests"], 10, "{done}");
    for i in 1..=10 {
        assert_eq!(app.roles_of(&emp(i)).await, vec![vec!["Agent", "Employee"]]);
    }
}

#[tokio::test]
async fn the_read_strategy_can_be_forced_and_a_scan_still_finds_duplicates_and_absentees() {
    let app = spawn_app_with(TestOptions {
        config: "[sync]\nread_strategy = \"scan\"\n".into(),
        ..org(300)
    })
    .await;
    app.seed(&[("DUP", &[]), ("DUP", &[]), ("ONE", &["Agent"])])
        .await;
    let job = app
        .submit_json(json!({"mode": "merge", "assignments": [
            {"external_id": "DUP", "role_template": "Agent", "license_tier": "Standard Agent"},
            {"external_id": "ONE", "role_template": "Wrap Up", "license_tier": "Standard Agent"},
            {"external_id": "GONE", "role_template": "Agent", "license_tier": "Standard Agent"},
        ]}))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["estimate"]["strategy"], "scan", "{done}");
    let items = by_line(&app.items(id).await);
    assert_eq!(items[&1]["reason"]["code"], "ambiguous_user");
    assert_eq!(items[&2]["outcome"], "applied");
    assert_eq!(items[&3]["outcome"], "not_found");
    assert_eq!(items[&3]["reason"]["code"], "user_not_found");
    // SPC + 4 pages of 100 (303 users), one lookup to confirm GONE is absent, one PATCH.
    let calls = scim_calls(&app).await;
    assert_eq!(count(&calls, "GET", "/users"), 5, "{calls:?}");
    assert_eq!(done["scim"]["requests"], 7, "{done}");
    assert_eq!(
        app.roles_of("DUP").await,
        vec![vec!["Employee"], vec!["Employee"]]
    );
}

#[tokio::test]
async fn an_external_id_that_looks_like_a_filter_changes_only_that_user() {
    let evil = r#"x" or userName pr ""#;
    let app = spawn_app().await;
    app.seed(&[(evil, &[]), ("BYSTANDER", &[])]).await;
    let job = app
        .submit_json(json!({"mode": "merge", "assignments": [
            {"external_id": evil, "role_template": "Agent", "license_tier": "Standard Agent"},
        ]}))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["strategy"], "lookup");
    let items = app.items(id).await;
    assert_eq!(items[0]["outcome"], "applied", "{items:?}");
    assert_eq!(app.roles_of(evil).await, vec![vec!["Agent", "Employee"]]);
    assert_eq!(app.roles_of("BYSTANDER").await, vec![vec!["Employee"]]);
    let calls = scim_calls(&app).await;
    assert_eq!(
        count_status(&calls, "GET", 400),
        0,
        "the filter parsed: {calls:?}"
    );
    assert_eq!(count(&calls, "PATCH", "/users/{id}"), 1, "{calls:?}");
}

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

/// Someone grants `Reporting` between the service's read and its write: the write meets a
/// stale version, re-reads, and the user ends with both changes (merge).
async fn a_change_between_read_and_write(profile: Profile) -> (TestApp, Value) {
    let rfc = profile == Profile::Rfc7644;
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            profile,
            ..Default::default()
        },
        config: if rfc {
            "[target]\nprofile = \"rfc7644\"\n".into()
        } else {
            String::new()
        },
        ..Default::default()
    })
    .await;
    app.seed(&[("C1", &[])]).await;
    let id = user_id(&app, "C1").await;
    let token = app.emulator_token().await;
    // Every call now waits 1.5 s before the emulator reads its state.
    app.set_faults(json!({"latency_ms": 1500})).await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nC1,Agent,Standard Agent\n")
        .await;
    // Wait for the service's read to be answered; its PATCH is then on its way, held by the
    // latency with the version it read.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let calls = scim_calls(&app).await;
        if count(&calls, "GET", "/users") >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no lookup: {calls:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.set_faults(json!({"latency_ms": 0})).await;
    let resp = app
        .client
        .patch(format!("{}/api/v2/scim/v2/Users/{id}", app.emulator_url()))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "roles", "value": [{"value": "Reporting"}]}],
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        app.roles_of("C1").await,
        vec![vec!["Agent", "Employee", "Reporting"]],
        "both changes survive"
    );
    // Lookup, the stale PATCH, the re-read, the PATCH that lands.
    assert_eq!(done["scim"]["requests"], 4, "{done}");
    let items = app.items(job["job_id"].as_str().unwrap()).await;
    assert_eq!(items[0]["outcome"], "applied");
    assert_eq!(strs(&items[0]["roles_added"]), vec!["Agent"]);
    (app, done)
}

#[tokio::test]
async fn a_version_conflict_on_genesys_re_reads_and_keeps_both_changes() {
    let (app, _) = a_change_between_read_and_write(Profile::Genesys).await;
    let calls = scim_calls(&app).await;
    assert_eq!(count_status(&calls, "PATCH", 409), 1, "{calls:?}");
    assert_eq!(
        count_status(&calls, "PATCH", 200),
        2,
        "ours and the test's: {calls:?}"
    );
    assert_eq!(count(&calls, "GET", "/users/{id}"), 1, "{calls:?}");
}

#[tokio::test]
async fn the_rfc7644_profile_works_end_to_end_with_weak_etags_412_and_204() {
    let (app, _) = a_change_between_read_and_write(Profile::Rfc7644).await;
    let calls = scim_calls(&app).await;
    assert_eq!(count_status(&calls, "PATCH", 412), 1, "{calls:?}");
    assert_eq!(count_status(&calls, "PATCH", 409), 0, "{calls:?}");
    assert_eq!(
        count_status(&calls, "PATCH", 200) + count_status(&calls, "PATCH", 204),
        2,
        "{calls:?}"
    );
    // And a larger job on the same target: scanned, weak ETags sent back as read.
    app.seed(&[("R1", &[]), ("R2", &["Agent"]), ("R3", &[])])
        .await;
    let job = app
        .submit_csv(&csv_rows(
            ["R1", "R2", "R3"].map(str::to_owned),
            "Queue Member",
            "Standard Agent",
        ))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["strategy"], "scan", "{done}");
    assert_eq!(done["counts"]["applied"], 3);
    for u in ["R1", "R2", "R3"] {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee", "Queue Member"]]
        );
    }
    let after = scim_calls(&app).await;
    assert_eq!(
        count_status(&after, "PATCH", 412),
        1,
        "no new conflict: {after:?}"
    );
}

#[tokio::test]
async fn a_role_the_target_does_not_know_fails_that_user_only() {
    let policy = include_str!("../../config/policy.toml").replacen(
        "roles = [\"Agent\", \"Queue Member\", \"Wrap Up\"]\n",
        "roles = [\"Agent\", \"Queue Member\", \"Wrap Up\", \"Ghost Role\"]\n",
        1,
    ) + "\n[[roles]]\nname = \"Ghost Role\"\npermissions = [\"ghost:thing:view\"]\n";
    let app = spawn_app_with(TestOptions {
        policy,
        ..Default::default()
    })
    .await;
    app.seed(&[("G1", &[]), ("G2", &[])]).await;
    // With the org's catalog readable, planning rejects the row (`unknown_target_role`, see
    // `org_roles.rs`); without it, the target refusing the write is what tells, user by user.
    app.set_faults(serde_json::json!({"missing_permissions": ["authorization:role:view"]}))
        .await;
    let job = app
        .submit_csv(
            "external_id,role_template,license_tier\nG1,Ghost Role,Standard Agent\nG2,Agent,Standard Agent\n",
        )
        .await;
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    let items = by_line(&app.items(id).await);
    assert_eq!(items[&2]["outcome"], "failed", "{:?}", items[&2]);
    assert_eq!(items[&2]["reason"]["code"], "scim_rejected");
    let message = items[&2]["reason"]["message"].as_str().unwrap();
    assert!(message.contains("400"), "{message}");
    assert!(
        message.contains("Ghost Role"),
        "the target's detail: {message}"
    );
    assert_eq!(items[&3]["outcome"], "applied");
    assert_eq!(app.roles_of("G1").await, vec![vec!["Employee"]]);
    assert_eq!(app.roles_of("G2").await, vec![vec!["Agent", "Employee"]]);
    let calls = scim_calls(&app).await;
    assert_eq!(
        count_status(&calls, "PATCH", 400),
        1,
        "not retried: {calls:?}"
    );
}

#[tokio::test]
async fn a_403_fails_the_job_once() {
    let app = spawn_app().await;
    let users: Vec<String> = (0..50).map(|i| format!("P{i:03}")).collect();
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &[][..])).collect();
    app.seed(&seeds).await;
    app.set_faults(json!({"forbid": true})).await;
    let job = app
        .submit_csv(&csv_rows(users.clone(), "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("forbidden"), "{error}");
    assert!(error.contains("missing.permissions"), "{error}");
    assert_eq!(done["counts"]["failed"], 50, "{done}");
    let calls = scim_calls(&app).await;
    let refused = count_status(&calls, "GET", 403);
    // Planning (page size, probe: 2), the calls in flight when the first 403 came back (at
    // most `max_concurrency`, 8), and at most one more per call in flight (a queued call handed
    // the permit of a refused one just before the chunk stopped); never one per user, never
    // retried. Measured: 10 (it was 52, one per user, before the chunk stopped at the first).
    assert!(refused <= 2 + 2 * 8, "{refused} calls refused: {calls:?}");
    assert_eq!(total(&calls), refused, "{calls:?}");
    app.set_faults(json!({"forbid": false})).await;
    for u in users.iter().take(3) {
        assert_eq!(app.roles_of(u).await, vec![vec!["Employee"]]);
    }
}

#[tokio::test]
async fn a_token_that_expires_during_the_job_is_renewed_a_bounded_number_of_times() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            users: 100,
            rate_limit_per_minute: 0,
            token_ttl_secs: 2,
            latency_ms: 20,
            ..Default::default()
        },
        config: "[target]\nrequests_per_minute = 1200\n".into(),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let job = app
        .submit_csv(&csv_rows((1..=100).map(emp), "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 100);
    assert!(secs > 2.0, "the job outlived a token: {secs}s");
    let stats = app.emulator_stats().await;
    let tokens: u64 = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "/oauth/token")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    // Renewed ahead of expiry (at 90 % of 2 s): about one token per 1.8 s, no more.
    let bound = (secs / 1.8).ceil() as u64 + 2;
    assert!(
        tokens >= 2 && tokens <= bound,
        "{tokens} tokens in {secs:.1}s"
    );
    let calls = scim_calls(&app).await;
    // The token is taken just before each call is sent, not before it queues: none expires
    // on the way (22 PATCHes got a 401 when it was taken first).
    assert_eq!(
        count_status(&calls, "GET", 401) + count_status(&calls, "PATCH", 401),
        0,
        "{calls:?}"
    );
    assert_eq!(done["scim"]["retries"], 0, "{done}");
    assert_eq!(
        done["scim"]["requests"], 102,
        "SPC + 1 page + 100 PATCHes: {done}"
    );
}

#[tokio::test]
async fn pacing_reaches_the_limit_without_429s_despite_latency() {
    // 1 200/min is 20 calls a second; with 100 ms latency one call at a time would do 10.
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            users: 200,
            rate_limit_per_minute: 1200,
            latency_ms: 100,
            ..Default::default()
        },
        config: "[target]\nrequests_per_minute = 1200\nmax_concurrency = 8\n".into(),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let job = app
        .submit_csv(&csv_rows((1..=120).map(emp), "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["scim"]["rate_limited"], 0, "{done}");
    let requests = done["scim"]["requests"].as_u64().unwrap();
    assert_eq!(requests, 123, "SPC + 2 pages + 120 PATCHes: {done}");
    let rate = requests as f64 / secs;
    assert!(
        rate > 12.0,
        "{rate:.1} calls/s: held back by latency, not by the limit"
    );
    assert!(
        rate < 26.0,
        "{rate:.1} calls/s: faster than the limit allows"
    );
}
