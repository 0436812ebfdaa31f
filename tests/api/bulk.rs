//! The Authorization write path (`target.write_api = "authorization"`) against the emulator:
//! grants seen through SCIM, the calls they cost (`/emulator/stats`), the per-job choice in
//! the estimate, a refused batch bisected down to the one bad id, and a replace job swapping
//! one role for another, each user with its own outcome, webhook and recorded roles.

use crate::helpers::*;
use crate::webhooks::{Answer, FAST, Hook, Receiver, app_with_hooks, new_secret, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const AUTHZ: &str = "[target]\nwrite_api = \"authorization\"\nbulk_max_subjects = 100\n";
const GRANT_ROUTE: &str = "/api/v2/authorization/roles/{roleId}";
const REMOVE_ROUTE: &str = "/api/v2/authorization/roles/{roleId}/users/remove";

/// Calls the emulator counted for (method, route, status).
fn count(stats: &Value, method: &str, route: &str, status: u64) -> u64 {
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] == method && r["route"] == route && r["status"] == status)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The roles of a user as SCIM shows them (`GET /api/v2/scim/v2/users?filter=externalId eq`).
async fn scim_roles(app: &TestApp, token: &str, external_id: &str) -> Vec<String> {
    let list: Value = app
        .client
        .get(format!("{}/api/v2/scim/v2/users", app.emulator_url()))
        .query(&[("filter", format!("externalId eq \"{external_id}\""))])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalResults"], 1, "{list}");
    strs(
        &list["Resources"][0]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].clone())
            .collect::<Value>(),
    )
}

#[tokio::test]
async fn a_rollout_goes_out_as_one_grant_per_role_per_chunk_and_shows_in_scim() {
    let app = spawn_app_with(TestOptions {
        config: AUTHZ.to_owned(),
        ..TestOptions::default()
    })
    .await;
    let users = seed_n(&app, "G", 250).await;
    app.reset_emulator_stats().await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 250, "{done}");

    let estimate = &done["estimate"];
    assert_eq!(estimate["write_api"], "authorization", "{estimate}");
    let (scim, authz) = (
        estimate["scim_path_calls"].as_i64().unwrap(),
        estimate["authorization_path_calls"].as_i64().unwrap(),
    );
    assert!(authz < scim, "{estimate}");

    // 250 users in chunks of 100: three grant calls, no PATCH; two setup reads.
    let stats = app.emulator_stats().await;
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 204), 3, "{stats}");
    assert_eq!(patches(&stats), 0, "{stats}");
    assert_eq!(
        count(&stats, "GET", "/api/v2/authorization/divisions/home", 200),
        1
    );
    // The role catalog is read once, by the planning check of the policy against the org
    // (the process's call, in no job's counts); the Authorization path reuses it.
    let catalog = count(&stats, "GET", "/api/v2/authorization/roles", 200) as i64;
    assert_eq!(catalog, 1, "{stats}");
    let api_calls =
        stats["total"].as_i64().unwrap() - count(&stats, "POST", "/oauth/token", 200) as i64;
    assert_eq!(
        done["scim"]["requests"].as_i64().unwrap(),
        api_calls - catalog,
        "the job counts every call it made: {done} {stats}"
    );
    assert!(
        api_calls <= authz,
        "the estimate is an upper bound: {api_calls} > {authz}"
    );

    // Seen through SCIM, user by user, with the change recorded per row.
    let token = app.emulator_token().await;
    for u in [&users[0], &users[99], &users[100], &users[249]] {
        assert_eq!(scim_roles(&app, &token, u).await, vec!["Agent", "Employee"]);
    }
    for item in app.items(&id).await {
        assert_eq!(item["outcome"], "applied", "{item}");
        assert_eq!(strs(&item["roles_added"]), vec!["Agent"]);
        assert!(item["user_id"].is_string());
    }

    // A job of one user: a PATCH costs less than the setup plus a grant; the planner says so.
    app.reset_emulator_stats().await;
    app.seed(&[("ONE", &[])]).await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nONE,Agent,Standard Agent\n")
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["write_api"], "scim", "{done}");
    let stats = app.emulator_stats().await;
    assert_eq!(patches(&stats), 1, "{stats}");
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 204), 0, "{stats}");
}

#[tokio::test]
async fn a_refused_batch_is_bisected_to_the_one_deleted_user_who_alone_fails() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let secret = new_secret();
    let app = app_with_hooks(
        &[Hook {
            name: "audit",
            url: &receiver.url,
            secret: &secret,
            previous: &[],
            events: &[],
        }],
        &format!("{AUTHZ}{FAST}"),
    )
    .await;
    let users = seed_n(&app, "B", 64).await;
    // Deleted between rolesync's read and its write: the grant batch holding it is refused whole.
    app.set_faults(json!({"delete_before_bulk_write": ["B0037"]}))
        .await;
    app.reset_emulator_stats().await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["applied"], 63, "{done}");
    assert_eq!(done["counts"]["not_found"], 1, "{done}");

    // 64 ids, one bad: the whole batch, then a refused and an accepted half at each of the
    // log2(64) = 6 levels: 7 refusals and 6 grants, 12 calls more than without the bad id.
    let stats = app.emulator_stats().await;
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 400), 7, "{stats}");
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 204), 6, "{stats}");
    assert_eq!(patches(&stats), 0);

    for item in app.items(&id).await {
        let ext = item["external_id"].as_str().unwrap_or_default().to_owned();
        if ext == "B0037" {
            assert_eq!(item["outcome"], "not_found", "{item}");
            assert_eq!(item["reason"]["code"], "user_not_found", "{item}");
        } else {
            assert_eq!(item["outcome"], "applied", "{item}");
            assert_eq!(strs(&item["roles_added"]), vec!["Agent"]);
        }
    }
    assert!(app.roles_of("B0037").await.is_empty(), "deleted");
    for u in users.iter().filter(|u| *u != "B0037") {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee"]],
            "{u}"
        );
    }

    // One webhook per user: 63 completed with what was recorded, 1 failed.
    wait_until("every user's event", Duration::from_secs(30), || {
        receiver.count_of("role_sync.completed") == 63 && receiver.count_of("role_sync.failed") == 1
    })
    .await;
    let events = receiver.events();
    let failed: Vec<&Value> = events
        .values()
        .filter(|(t, _)| t == "role_sync.failed")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(failed[0]["external_id"], "B0037", "{failed:?}");
    for (_, d) in events.values().filter(|(t, _)| t == "role_sync.completed") {
        assert_eq!(strs(&d["roles_before"]), vec!["Employee"]);
        assert_eq!(strs(&d["roles_after"]), vec!["Agent", "Employee"]);
    }
}

#[tokio::test]
async fn a_replace_job_swaps_one_role_for_another_with_one_remove_and_one_grant() {
    let policy = include_str!("../../config/policy.toml").replace(
        "max_removal_fraction = 0.2\nmax_removed_users = 500",
        "max_removal_fraction = 1.0\nmax_removed_users = 100000",
    );
    let app = spawn_app_with(TestOptions {
        config: AUTHZ.to_owned(),
        policy,
        ..TestOptions::default()
    })
    .await;
    let users: Vec<String> = (0..40).map(|i| format!("S{i:04}")).collect();
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &["Agent"][..])).collect();
    app.seed(&seeds).await;
    app.reset_emulator_stats().await;
    let resp = app
        .submit(
            "text/csv",
            "?mode=replace",
            csv_for(&users, "Reporting", "Auditor"),
        )
        .await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["write_api"], "authorization", "{done}");

    let stats = app.emulator_stats().await;
    assert_eq!(count(&stats, "PUT", REMOVE_ROUTE, 200), 1, "{stats}");
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 204), 1, "{stats}");
    assert_eq!(patches(&stats), 0);

    let token = app.emulator_token().await;
    for u in &users {
        assert_eq!(
            scim_roles(&app, &token, u).await,
            vec!["Employee", "Reporting"],
            "{u}"
        );
    }
    for item in app.items(&id).await {
        assert_eq!(item["outcome"], "applied", "{item}");
        assert_eq!(strs(&item["roles_added"]), vec!["Reporting"]);
        assert_eq!(strs(&item["roles_removed"]), vec!["Agent"]);
    }
}

/// Deletes the user with `external_id` through SCIM and creates another with the same
/// externalId (a new id), holding `Employee`.
async fn recreate(app: &TestApp, token: &str, external_id: &str) {
    let list: Value = app
        .client
        .get(format!("{}/api/v2/scim/v2/users", app.emulator_url()))
        .query(&[("filter", format!("externalId eq \"{external_id}\""))])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["Resources"][0]["id"].as_str().unwrap().to_owned();
    let resp = app
        .client
        .delete(format!("{}/api/v2/scim/v2/users/{id}", app.emulator_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    app.seed(&[(external_id, &["Employee"][..])]).await;
}

/// The second job on the Authorization path needs no SCIM read: the first one's scan left the
/// users' ids in the store, so their current roles come from the home division's grants (500 a
/// call). An id gone since (a user deleted and created again under the same externalId) is
/// refused by the grant, forgotten, and its user looked up and written: checked on use.
#[tokio::test]
async fn a_later_job_reads_grants_with_the_ids_an_earlier_one_saw_and_checks_them_on_use() {
    let app = spawn_app_with(TestOptions {
        config: AUTHZ.to_owned(),
        ..TestOptions::default()
    })
    .await;
    let users = seed_n(&app, "W", 250).await;
    let first = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(first["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["strategy"], "scan", "{done}");

    // 250 users holding Employee and Agent: 500 grants, one page.
    app.reset_emulator_stats().await;
    let job = app
        .submit_csv(&csv_for(&users, "Wrap Up", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 250, "{done}");
    let estimate = &done["estimate"];
    assert_eq!(estimate["strategy"], "grants", "{estimate}");
    assert_eq!(estimate["write_api"], "authorization", "{estimate}");
    assert_eq!(estimate["scan_pages"], 1, "{estimate}");
    assert_eq!(estimate["lookups"], 0, "{estimate}");
    let stats = app.emulator_stats().await;
    let grants_route = "/api/v2/authorization/divisions/{divisionId}/grants";
    assert_eq!(count(&stats, "GET", grants_route, 200), 1, "{stats}");
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 204), 3, "{stats}");
    assert_eq!(
        count(&stats, "GET", "/api/v2/scim/v2/users", 200),
        0,
        "{stats}"
    );
    assert_eq!(patches(&stats), 0, "{stats}");
    assert_eq!(done["scim"]["requests"], 4, "{done}");
    let token = app.emulator_token().await;
    for u in [&users[0], &users[150], &users[249]] {
        assert_eq!(
            scim_roles(&app, &token, u).await,
            vec!["Agent", "Employee", "Wrap Up"]
        );
    }
    for item in app.items(&id).await {
        assert_eq!(item["outcome"], "applied", "{item}");
        assert_eq!(strs(&item["roles_added"]), vec!["Wrap Up"], "{item}");
    }

    // A user replaced under the same externalId: the id known for it is stale.
    let stale = users[120].clone();
    recreate(&app, &token, &stale).await;
    app.reset_emulator_stats().await;
    let job = app
        .submit_csv(&csv_for(&users, "Queue Member", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 250, "{done}");
    assert_eq!(done["estimate"]["strategy"], "grants", "{done}");
    let stats = app.emulator_stats().await;
    // The stale id: its batch refused and bisected, the id read (404), the user looked up
    // by externalId and granted alone.
    assert!(count(&stats, "POST", GRANT_ROUTE, 400) >= 1, "{stats}");
    assert_eq!(
        count(&stats, "GET", "/api/v2/scim/v2/users/{id}", 404),
        1,
        "{stats}"
    );
    assert_eq!(
        count(&stats, "GET", "/api/v2/scim/v2/users", 200),
        1,
        "{stats}"
    );
    // `Queue Member` brings `Agent` with it (the policy's inheritance); the others had it.
    assert_eq!(
        scim_roles(&app, &token, &stale).await,
        vec!["Agent", "Employee", "Queue Member"]
    );
    for u in [&users[0], &users[119], &users[121], &users[249]] {
        assert_eq!(
            scim_roles(&app, &token, u).await,
            vec!["Agent", "Employee", "Queue Member", "Wrap Up"]
        );
    }
    let items = app.items(&id).await;
    let row = items
        .iter()
        .find(|i| i["external_id"] == stale.as_str())
        .unwrap();
    assert_eq!(row["outcome"], "applied", "{row}");
    assert_eq!(
        strs(&row["roles_added"]),
        vec!["Agent", "Queue Member"],
        "{row}"
    );
}

/// A bulk grant that lands but whose answer is lost, every attempt of it (the emulator's
/// `lose_write_answers`), with no attempt left (`sync.max_user_attempts = 1`): before a user is
/// recorded `failed`, it is read back, and since the grant is in place it is recorded `applied`
/// with what landed. (Found by the hour-long chaos run: such users were recorded
/// `failed/retries_exhausted` while the target held the job's grant.)
#[tokio::test]
async fn a_grant_whose_answer_is_lost_is_read_back_and_recorded_applied_not_failed() {
    let app = spawn_app_with(TestOptions {
        config: format!(
            "{AUTHZ}max_attempts = 2\n[sync]\nmax_user_attempts = 1\noutage_min_users = 1000\n"
        ),
        ..TestOptions::default()
    })
    .await;
    let users = seed_n(&app, "LOST", 10).await;
    app.set_faults(json!({"lose_write_answers": 1000})).await;
    app.reset_emulator_stats().await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    let stats = app.emulator_stats().await;
    assert_eq!(done["estimate"]["write_api"], "authorization", "{done}");
    // Every attempt of the grant ran (and landed), none was answered.
    assert_eq!(count(&stats, "POST", GRANT_ROUTE, 0), 2, "{stats}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 10, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    for item in app.items(&id).await {
        assert_eq!(item["outcome"], "applied", "{item}");
        assert_eq!(strs(&item["roles_added"]), vec!["Agent"], "{item}");
    }
    for u in &users {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee"]],
            "{u}"
        );
    }
}

/// The same on the SCIM path: a PATCH that lands but whose answer is lost. Its retry carries the
/// old version and is refused (409/412); the user read again holds the job's roles, and the
/// record says `applied` — never `unchanged` (the write was this job's) nor `failed`.
#[tokio::test]
async fn a_patch_whose_answer_is_lost_is_recorded_applied() {
    let app = spawn_app_with(TestOptions {
        config: "[target]\nmax_attempts = 2\n[sync]\nmax_user_attempts = 1\n".to_owned(),
        ..TestOptions::default()
    })
    .await;
    app.seed(&[("LOSTP", &[])]).await;
    app.set_faults(json!({"lose_write_answers": 1})).await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nLOSTP,Agent,Standard Agent\n")
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    let items = app.items(&id).await;
    assert_eq!(items[0]["outcome"], "applied", "{items:?} {done}");
    assert_eq!(strs(&items[0]["roles_added"]), vec!["Agent"], "{items:?}");
    assert_eq!(app.roles_of("LOSTP").await, vec![vec!["Agent", "Employee"]]);
}
