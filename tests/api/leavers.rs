//! Joiners, movers and leavers, end to end: `action = revoke` rows in every format, and rosters
//! (`roster=full`) whose absent managed users are leavers, against the emulator.

use crate::helpers::*;
use serde_json::{Value, json};

/// The shipped policy, except that it does not manage "Reporting Auditor" (a role granted by
/// hand in Genesys), protects "Wrap Up" besides Employee, and sets the removal bounds.
fn policy(max_removal_fraction: f64) -> String {
    let policy = include_str!("../../config/policy.toml")
        .replace("roles = [\"Reporting\", \"Reporting Auditor\"]", "roles = [\"Reporting\"]")
        .replace(
            "[[roles]]\nname = \"Reporting Auditor\"\ninherits = [\"Reporting\"]\npermissions = [\"audits:*:view\", \"authorization:grant:view\"]\n",
            "",
        )
        .replace(
            "protected_roles = [\"Employee\"]",
            "protected_roles = [\"Employee\", \"Wrap Up\"]",
        );
    policy[..policy.find("[[sod]]").unwrap()].to_owned()
        + &format!(
            "[approval]\nmax_removal_fraction = {max_removal_fraction}\nmax_removed_users = 500\n"
        )
}

async fn app_with(max_removal_fraction: f64) -> TestApp {
    app_on(WriteApi::Scim, max_removal_fraction, "").await
}

/// The two write paths a leaver's removals can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteApi {
    /// One `PATCH` (with `If-Match`) per user.
    Scim,
    /// `target.write_api = "authorization"`: one `PUT …/users/remove` per role per 100 users.
    Authorization,
}

const BULK_MAX: u64 = 100;

async fn app_on(write_api: WriteApi, max_removal_fraction: f64, extra_config: &str) -> TestApp {
    let mut config = extra_config.to_owned();
    if write_api == WriteApi::Authorization {
        config.push_str(&format!(
            "[target]\nwrite_api = \"authorization\"\nbulk_max_subjects = {BULK_MAX}\n"
        ));
    }
    spawn_app_with(TestOptions {
        policy: policy(max_removal_fraction),
        config,
        ..Default::default()
    })
    .await
}

/// Calls the emulator counted for (method, route), whatever their status.
fn count(stats: &Value, method: &str, route: &str) -> u64 {
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] == method && r["route"] == route)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

const REMOVE_ROUTE: &str = "/api/v2/authorization/roles/{roleId}/users/remove";
const GRANT_ROUTE: &str = "/api/v2/authorization/roles/{roleId}";

/// Every call the emulator counted except OAuth token requests.
fn api_calls(stats: &Value) -> u64 {
    stats["total"].as_u64().unwrap_or(0) - count(stats, "POST", "/oauth/token")
}

fn job_id(job: &Value) -> String {
    job["job_id"].as_str().unwrap().to_owned()
}

/// SCIM calls the emulator received since the last reset, and the PATCHes among them.
async fn scim_calls(app: &TestApp) -> (u64, u64) {
    let stats = app.emulator_stats().await;
    let calls = stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["route"].as_str().unwrap_or("").contains("/scim/"))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    (calls, patches(&stats))
}

/// Every emulator user's roles, sorted, by externalId.
async fn roles_by_user(app: &TestApp) -> std::collections::HashMap<String, Vec<String>> {
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
        .into_iter()
        .flatten()
        .map(|u| {
            let mut roles: Vec<String> = u["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    r.as_str()
                        .map(str::to_owned)
                        .or_else(|| r["value"].as_str().map(str::to_owned))
                })
                .collect();
            roles.sort();
            (u["externalId"].as_str().unwrap_or("").to_owned(), roles)
        })
        .collect()
}

fn item_of<'a>(items: &'a [Value], external_id: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["external_id"] == external_id)
        .unwrap_or_else(|| panic!("no row for {external_id}: {items:?}"))
}

/// Reverts job `id` as the HR key and waits for the revert to end, which must succeed.
async fn revert_and_wait(app: &TestApp, id: &str) -> Value {
    let (status, body) = crate::undo::revert(app, id, "").await;
    assert_eq!(status, 202, "{body}");
    let rev_done = app.wait_finished(&job_id(&body)).await;
    assert_eq!(rev_done["status"], "succeeded", "{rev_done}");
    rev_done
}

const EVERYTHING: &[&str] = &[
    "Employee",
    "System Administrator",
    "Supervisor",
    "Reporting",
    "Agent",
    "Wrap Up",
    "Reporting Auditor",
];

/// A leaver row for a System Administrator (CSV, `action` column, role and tier empty) takes
/// every managed role, the ones System Administrator implied included, and keeps Employee, the
/// unmanaged Reporting Auditor and the protected Wrap Up: one read and one PATCH. The desired
/// state becomes "no managed role", so a reconcile gives nothing back; a revert does.
#[tokio::test]
async fn a_leaver_row_takes_every_managed_role_and_a_revert_gives_them_back() {
    let app = app_with(1.0).await;
    app.seed(&[("L1", EVERYTHING), ("K1", &["Employee"])]).await;
    app.reset_emulator_stats().await;
    let job = app
        .submit_csv(
            "external_id,role_template,license_tier,action\nL1,,,revoke\nK1,Agent,Standard Agent,\n",
        )
        .await;
    let id = job_id(&job);
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        app.roles_of("L1").await,
        vec![vec!["Employee", "Reporting Auditor", "Wrap Up"]]
    );
    assert_eq!(app.roles_of("K1").await, vec![vec!["Agent", "Employee"]]);
    let items = app.items(&id).await;
    let l1 = item_of(&items, "L1");
    assert_eq!(l1["action"], "revoke");
    assert_eq!(l1["outcome"], "applied", "{l1}");
    assert_eq!(
        strs(&l1["roles_removed"]),
        vec!["Agent", "Reporting", "Supervisor", "System Administrator"]
    );
    assert_eq!(strs(&l1["roles_before"]).len(), EVERYTHING.len());
    assert_eq!(item_of(&items, "K1")["action"], "assign");
    // Two users looked up, two PATCHes.
    assert_eq!(scim_calls(&app).await, (4, 2));
    assert_eq!(
        app.store_count(
            "SELECT COUNT(*) FROM desired_state WHERE external_id = 'L1' AND roles = '[]'"
        )
        .await,
        1
    );

    // A reconcile (replace) finds the leaver as desired: nothing to give back.
    let resp = app
        .client
        .post(format!("{}/v1/reconcile", app.address))
        .bearer_auth(WRITER_KEY)
        .json(&json!({"mode": "replace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let rec = job_id(&resp.json::<Value>().await.unwrap());
    let rec_done = app.wait_finished(&rec).await;
    assert_eq!(rec_done["counts"]["applied"], 0, "{rec_done}");
    assert_eq!(
        app.roles_of("L1").await,
        vec![vec!["Employee", "Reporting Auditor", "Wrap Up"]]
    );

    // A revert puts the leaver's roles back (and takes K1's Agent away).
    revert_and_wait(&app, &id).await;
    let mut everything: Vec<&str> = EVERYTHING.to_vec();
    everything.sort();
    assert_eq!(app.roles_of("L1").await, vec![everything]);
    assert_eq!(app.roles_of("K1").await, vec![vec!["Employee"]]);
}

/// Leavers on the Authorization path: 20 users holding everything, each sent as a revoke row
/// (the planner takes this path for a job this size; for one user a PATCH is cheaper). Each
/// managed role is taken away by one `PUT …/users/remove` for all 20 (no PATCH); Employee, the
/// unmanaged and the protected roles stay; every row records the roles before and after,
/// `role_sync.completed` says what was removed (checked by the receiver), and a revert grants
/// them back through the same path, one call per role.
#[tokio::test]
async fn leavers_on_the_authorization_path_lose_every_managed_role_in_bulk_calls() {
    use crate::webhooks::{Answer, FAST, Hook, Receiver, endpoint_toml, new_secret, wait_until};
    let receiver = Receiver::start(Answer::Status(200)).await;
    let secret = new_secret();
    let hooks = endpoint_toml(&Hook {
        name: "audit",
        url: &receiver.url,
        secret: &secret,
        previous: &[],
        events: &[],
    });
    let app = app_on(WriteApi::Authorization, 1.0, &format!("{FAST}{hooks}")).await;
    let leavers: Vec<String> = (0..20).map(|i| format!("L{i:02}")).collect();
    let seeds: Vec<(&str, &[&str])> = leavers.iter().map(|u| (u.as_str(), EVERYTHING)).collect();
    app.seed(&seeds).await;
    app.reset_emulator_stats().await;
    let rows: Vec<Value> = leavers
        .iter()
        .map(|u| json!({"external_id": u, "action": "revoke"}))
        .collect();
    let job = app.submit_json(json!({"assignments": rows})).await;
    let id = job_id(&job);
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["write_api"], "authorization", "{done}");
    assert_eq!(done["counts"]["applied"], 20, "{done}");
    for u in &leavers {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Employee", "Reporting Auditor", "Wrap Up"]],
            "{u}"
        );
    }
    let stats = app.emulator_stats().await;
    assert_eq!(patches(&stats), 0, "{stats}");
    // One call per role taken away: Agent, Reporting, Supervisor, System Administrator.
    assert_eq!(count(&stats, "PUT", REMOVE_ROUTE), 4, "{stats}");
    assert_eq!(count(&stats, "POST", GRANT_ROUTE), 0, "{stats}");
    let removed = vec!["Agent", "Reporting", "Supervisor", "System Administrator"];
    for item in app.items(&id).await {
        assert_eq!(item["action"], "revoke", "{item}");
        assert_eq!(item["outcome"], "applied", "{item}");
        assert_eq!(strs(&item["roles_removed"]), removed, "{item}");
        assert_eq!(
            strs(&item["roles_before"]).len(),
            EVERYTHING.len(),
            "{item}"
        );
        assert_eq!(
            strs(&item["roles_after"]),
            vec!["Employee", "Reporting Auditor", "Wrap Up"],
            "{item}"
        );
    }
    wait_until(
        "role_sync.completed for the 20",
        std::time::Duration::from_secs(30),
        || receiver.count_of("role_sync.completed") >= 20,
    )
    .await;
    let completed: Vec<Value> = receiver
        .events()
        .into_values()
        .filter(|(t, _)| t == "role_sync.completed")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(completed.len(), 20, "{completed:?}");
    for c in &completed {
        assert_eq!(strs(&c["roles_removed"]), removed, "{c}");
        assert_eq!(strs(&c["roles_added"]), Vec::<String>::new(), "{c}");
    }

    // The revert grants the four back to the 20, one call per role.
    app.reset_emulator_stats().await;
    revert_and_wait(&app, &id).await;
    let mut everything: Vec<&str> = EVERYTHING.to_vec();
    everything.sort();
    for u in &leavers {
        assert_eq!(app.roles_of(u).await, vec![everything.clone()], "{u}");
    }
    let stats = app.emulator_stats().await;
    assert_eq!(count(&stats, "POST", GRANT_ROUTE), 4, "{stats}");
    assert_eq!(patches(&stats), 0, "{stats}");
}

/// `action` in NDJSON and in a JSON envelope: a revoke row needs only `external_id`; a user
/// whose rows mix assign and revoke has all of them rejected (`conflicting_actions`) and is not
/// written; another word is that row's `malformed_row`. A JSON row without `role_template`
/// and without `action = revoke` still refuses the body.
#[tokio::test]
async fn revoke_rows_in_ndjson_and_json_and_mixed_rows_refused() {
    let app = app_with(1.0).await;
    app.seed(&[
        ("N1", &["Employee", "Supervisor", "Agent", "Reporting"]),
        ("J1", &["Employee", "System Administrator"]),
        ("M1", &["Employee", "Agent"]),
        ("B1", &["Employee", "Agent"]),
    ])
    .await;
    let resp = app
        .submit(
            "application/x-ndjson",
            "",
            "{\"external_id\":\"N1\",\"action\":\"revoke\"}\n",
        )
        .await;
    assert_eq!(resp.status(), 202);
    let nd = job_id(&resp.json::<Value>().await.unwrap());
    assert_eq!(app.wait_finished(&nd).await["status"], "succeeded");
    assert_eq!(app.roles_of("N1").await, vec![vec!["Employee"]]);

    let job = app
        .submit_json(json!({"mode": "merge", "assignments": [
            {"external_id": "J1", "action": "revoke"},
            {"external_id": "M1", "action": "revoke"},
            {"external_id": "M1", "role_template": "Agent", "license_tier": "Standard Agent"},
            {"external_id": "B1", "action": "fire", "role_template": "Agent", "license_tier": "Standard Agent"},
        ]}))
        .await;
    let id = job_id(&job);
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(app.roles_of("J1").await, vec![vec!["Employee"]]);
    assert_eq!(app.roles_of("M1").await, vec![vec!["Agent", "Employee"]]);
    let items = by_line(&app.items(&id).await);
    assert_eq!(items[&1]["outcome"], "applied", "{:?}", items[&1]);
    assert_eq!(
        strs(&items[&1]["roles_removed"]),
        vec!["System Administrator"]
    );
    for line in [2, 3] {
        assert_eq!(items[&line]["reason"]["code"], "conflicting_actions");
    }
    assert_eq!(items[&4]["reason"]["code"], "malformed_row");
    assert!(
        items[&4]["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("action")
    );

    let resp = app
        .submit(
            "application/json",
            "",
            json!([{"external_id": "J1", "license_tier": "Standard Agent"}]).to_string(),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("role_template"), "{body}");
}

/// A roster of 1 960 of 2 000 managed users (`roster=full`, merge): exactly the 40 absent lose
/// their managed role, the others are untouched, and the job costs its reads plus one PATCH per
/// leaver. Their desired state becomes "no managed role": the next roster does not list them.
/// A revert of the roster gives the 40 their role back, and nobody else is written.
#[tokio::test]
async fn a_full_roster_makes_leavers_of_the_managed_users_it_does_not_name() {
    roster_run(2000, 40, WriteApi::Scim).await;
}

/// The same on the Authorization path: the 40 removals go out as one `users/remove` call (100
/// subjects per call), no PATCH; the revert as one grant.
#[tokio::test]
async fn a_full_roster_on_the_authorization_path_removes_the_leavers_in_bulk() {
    roster_run(2000, 40, WriteApi::Authorization).await;
}

/// The figure, for BENCHMARKS.md: `cargo test --test api roster_of_10_000 -- --ignored
/// --nocapture --test-threads 1` (a minute or two each on 2 cores: the first job reads 10 000
/// users).
#[tokio::test]
#[ignore]
async fn roster_of_10_000_with_200_absent() {
    roster_run(10_000, 200, WriteApi::Scim).await;
}

#[tokio::test]
#[ignore]
async fn roster_of_10_000_with_200_absent_on_the_authorization_path() {
    roster_run(10_000, 200, WriteApi::Authorization).await;
}

async fn roster_run(n: usize, absent_n: usize, write_api: WriteApi) {
    let app = app_on(write_api, 0.2, "").await;
    let users: Vec<String> = (0..n).map(|i| format!("R{i:05}")).collect();
    let seeds: Vec<(&str, &[&str])> = users
        .iter()
        .map(|u| (u.as_str(), &["Employee", "Agent"][..]))
        .collect();
    app.seed(&seeds).await;
    // Everybody managed: the first batch finds them all right and records their desired state.
    let first = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let first_done = app.wait_finished(&job_id(&first)).await;
    assert_eq!(first_done["counts"]["unchanged"], n as i64, "{first_done}");

    app.reset_emulator_stats().await;
    // Every (n / absent_n)th user is absent.
    let absent: Vec<&String> = users.iter().step_by(n / absent_n).collect();
    let present: Vec<String> = users
        .iter()
        .filter(|u| !absent.contains(u))
        .cloned()
        .collect();
    let started = std::time::Instant::now();
    let resp = app
        .submit(
            "text/csv",
            "?roster=full",
            csv_for(&present, "Agent", "Standard Agent"),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = job_id(&resp.json::<Value>().await.unwrap());
    let done = app.wait_finished(&id).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["total"], n as i64, "{done}");
    assert_eq!(done["counts"]["applied"], absent_n as i64, "{done}");
    assert_eq!(
        done["estimate"]["leavers"]["users"], absent_n as i64,
        "{done}"
    );
    assert_eq!(done["estimate"]["leavers"]["sample"][0], "R00000");
    let stats = app.emulator_stats().await;
    let (scim, patched) = scim_calls(&app).await;
    let reads = done["estimate"]["reads"].as_u64().unwrap();
    let removes = count(&stats, "PUT", REMOVE_ROUTE);
    let all = api_calls(&stats);
    match write_api {
        WriteApi::Scim => {
            println!(
                "roster of {n} users, {absent_n} absent, SCIM path: {all} calls = {reads} reads + \
                 {patched} PATCHes ({} strategy), {secs:.1} s from the POST to the end",
                done["estimate"]["strategy"]
            );
            assert_eq!(patched, absent_n as u64);
            assert_eq!(scim, reads + absent_n as u64, "{done}");
            assert_eq!(all, scim, "{stats}");
        }
        WriteApi::Authorization => {
            // The reads are the home division's grants, a page at a time (no SCIM call), plus
            // the home division itself; the leavers have chunks of their own, so their
            // removals cost one call per role per 100 of them, however they spread.
            println!(
                "roster of {n} users, {absent_n} absent, Authorization path: {all} calls = \
                 {reads} reads + {removes} users/remove ({} strategy), {secs:.1} s from the POST \
                 to the end",
                done["estimate"]["strategy"]
            );
            assert_eq!(done["estimate"]["write_api"], "authorization", "{done}");
            assert_eq!(patched, 0, "{stats}");
            assert_eq!(scim, 0, "{stats}");
            assert_eq!(all, reads + removes, "{done} {stats}");
            assert_eq!(removes, (absent_n as u64).div_ceil(BULK_MAX), "{stats}");
        }
    }
    // Exactly the absent lost their role (one read of the emulator's whole org).
    let org = roles_by_user(&app).await;
    assert_eq!(org.len(), n);
    for u in &users {
        let want: &[&str] = if absent.contains(&u) {
            &["Employee"]
        } else {
            &["Agent", "Employee"]
        };
        assert_eq!(org[u.as_str()], want, "{u}");
    }
    let items = app.items(&id).await;
    let leavers: Vec<&Value> = items.iter().filter(|i| i["action"] == "revoke").collect();
    assert_eq!(leavers.len(), absent_n);
    assert!(
        leavers
            .iter()
            .all(|i| i["line"].as_i64().unwrap() > (n - absent_n) as i64
                && i["outcome"] == "applied"
                && strs(&i["roles_removed"]) == vec!["Agent"])
    );

    // The same roster again: nobody left to remove, no write.
    app.reset_emulator_stats().await;
    let again = app
        .submit(
            "text/csv",
            "?roster=full",
            csv_for(&present, "Agent", "Standard Agent"),
        )
        .await;
    let again = job_id(&again.json::<Value>().await.unwrap());
    let again_done = app.wait_finished(&again).await;
    assert_eq!(again_done["counts"]["total"], (n - absent_n) as i64);
    let stats = app.emulator_stats().await;
    assert_eq!(patches(&stats), 0);
    assert_eq!(count(&stats, "PUT", REMOVE_ROUTE), 0);

    // A revert of the roster puts the leavers back, and writes nobody else.
    app.reset_emulator_stats().await;
    let rev_done = revert_and_wait(&app, &id).await;
    assert_eq!(rev_done["counts"]["applied"], absent_n as i64, "{rev_done}");
    let stats = app.emulator_stats().await;
    match write_api {
        WriteApi::Scim => assert_eq!(patches(&stats), absent_n as u64, "{stats}"),
        WriteApi::Authorization => {
            assert_eq!(patches(&stats), 0, "{stats}");
            let grants = count(&stats, "POST", GRANT_ROUTE);
            assert_eq!(grants, (absent_n as u64).div_ceil(BULK_MAX), "{stats}");
            println!("its revert: {} calls, {grants} grants", api_calls(&stats));
        }
    }
    let org = roles_by_user(&app).await;
    for u in &users {
        assert_eq!(org[u.as_str()], ["Agent", "Employee"], "{u}");
    }
    // Their desired state is theirs again: a reconcile finds nothing to change.
    assert_eq!(
        app.store_count("SELECT COUNT(*) FROM desired_state WHERE roles = '[]'")
            .await,
        0
    );
}

/// A roster missing 30 % of the managed users crosses `max_removal_fraction` (0.2): a dry run
/// lists the leavers (and is never held); the real one waits in `awaiting_approval` with their
/// number and a sample, writes nothing, and removes their roles once an admin approves it.
#[tokio::test]
async fn a_roster_missing_30_percent_waits_for_approval_and_a_dry_run_lists_the_leavers() {
    let app = app_with(0.2).await;
    let users: Vec<String> = (0..100).map(|i| format!("P{i:03}")).collect();
    let seeds: Vec<(&str, &[&str])> = users
        .iter()
        .map(|u| (u.as_str(), &["Employee", "Agent"][..]))
        .collect();
    app.seed(&seeds).await;
    let first = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    app.wait_finished(&job_id(&first)).await;
    let present: Vec<String> = users[30..].to_vec();
    let body = json!({
        "roster": "full",
        "dry_run": true,
        "assignments": present.iter().map(|u| json!({
            "external_id": u, "role_template": "Agent", "license_tier": "Standard Agent"
        })).collect::<Vec<_>>(),
    });

    app.reset_emulator_stats().await;
    let dry = job_id(&app.submit_json(body.clone()).await);
    let dry_done = app.wait_finished(&dry).await;
    assert_eq!(dry_done["status"], "succeeded", "{dry_done}");
    assert_eq!(dry_done["estimate"]["leavers"]["users"], 30, "{dry_done}");
    let planned: Vec<String> = app
        .items(&dry)
        .await
        .into_iter()
        .filter(|i| i["action"] == "revoke")
        .map(|i| {
            assert_eq!(i["outcome"], "planned", "{i}");
            assert_eq!(strs(&i["roles_removed"]), vec!["Agent"]);
            i["external_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(planned, users[..30].to_vec());

    let mut real = body;
    real["dry_run"] = json!(false);
    let id = job_id(&app.submit_json(real).await);
    let held = app.wait_for(&id, &["awaiting_approval"]).await;
    assert_eq!(held["estimate"]["leavers"]["users"], 30, "{held}");
    assert_eq!(
        held["estimate"]["leavers"]["sample"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
    assert_eq!(held["approval"]["users_losing_roles"], 30, "{held}");
    assert_eq!(held["approval"]["threshold_users"], 20, "{held}");
    assert!(
        held["approval"]["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("removals")),
        "{held}"
    );
    assert_eq!(scim_calls(&app).await.1, 0);
    assert_eq!(app.roles_of("P000").await, vec![vec!["Agent", "Employee"]]);

    let resp = app.post(&format!("/v1/jobs/{id}/approve"), ADMIN_KEY).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let done = app.wait_finished(&id).await;
    assert_eq!(done["counts"]["applied"], 30, "{done}");
    assert_eq!(scim_calls(&app).await.1, 30);
    assert_eq!(app.roles_of("P000").await, vec![vec!["Employee"]]);
    assert_eq!(app.roles_of("P099").await, vec![vec!["Agent", "Employee"]]);
}
