//! Settling what a dead or stopped owner left: a cancelled job's chunks read back (and read
//! again when the read fails), and a job planned again after its planner died mid-read.

use super::*;

/// A replica killed (`kill -9`) with writes sent and not committed: what the next test needs.
struct DeadOwner {
    emu: genesys_cloud_emulator::EmulatorHandle,
    dir: tempfile::TempDir,
    /// Held for the test: on PostgreSQL, dropping it drops the database.
    _db: TestStore,
    store: String,
    extra: String,
    hooks: Hooks,
    id: String,
    /// Users holding the job's role at the kill (the committed ones and the others).
    written: usize,
}

/// Starts a replica on 600 users granted `Agent`, kills it once at least 20 writes reached the
/// target that no committed chunk records, and waits until nothing the dead process had on the
/// wire is still landing.
async fn stage_dead_owner() -> DeadOwner {
    let emu = emulator_with(EmulatorArgs {
        rate_limit_per_minute: 0,
        latency_ms: 20,
        ..Default::default()
    })
    .await;
    let base = emu.base_url();
    let users = seed_users(&base, "D", 600).await;
    let (hook, hooks) = start_hooks().await;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_store(dir.path()).await;
    let store = db.url.clone();
    let extra = hook_toml(&hook);
    let mut a = start_service(dir.path(), &store, &base, &extra).await;
    let job = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/jobs",
        Some(("text/csv", csv_for(&users, "Agent", "Standard Agent"))),
    )
    .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    // Kill once at least 20 writes reached the target that no committed chunk records.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = api(
            &a.url,
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}"),
            None,
        )
        .await;
        let committed = j["counts"]["applied"].as_u64().unwrap_or(0);
        if patches_sent(&base).await >= committed + 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the job does not move: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&a.child, "-KILL");
    wait_exit(&mut a.child, 10).await;
    // Whatever the dead process had on the wire has landed or never will.
    let mut last = patches_sent(&base).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = patches_sent(&base).await;
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes of a dead process keep landing"
        );
        last = now;
    }
    let recorded = {
        let s = rolesync::store::Store::connect(&store, 2).await.unwrap();
        let j = s.get_job(&id).await.unwrap().unwrap();
        s.close().await;
        j.counts.applied as usize
    };
    let written = roles_by_user(&base)
        .await
        .values()
        .filter(|r| r.iter().any(|r| r == "Agent"))
        .count();
    assert!(
        written > recorded,
        "staged: writes sent and not recorded ({written} written, {recorded} recorded)"
    );
    DeadOwner {
        emu,
        dir,
        _db: db,
        store,
        extra,
        hooks,
        id,
        written,
    }
}

/// A replica dies (`kill -9`) with writes sent and not committed; the job is then cancelled
/// through another replica. The dead owner's chunks, claimed once their lease expires, are
/// settled without a write: each user whose write was sent (its intent recorded) is read back
/// and recorded `applied`, with its webhook, and every other user `cancelled`.
#[tokio::test]
async fn a_cancelled_jobs_chunks_whose_owner_died_are_settled_by_reading_back() {
    let staged = stage_dead_owner().await;
    let (base, id, written) = (staged.emu.base_url(), &staged.id, staged.written);
    let b = start_service(staged.dir.path(), &staged.store, &base, &staged.extra).await;
    let watch = PatchWatch::start(&base).await;
    let at_cancel = api(
        &b.url,
        reqwest::Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
        None,
    )
    .await;
    let answered = Instant::now();
    assert_eq!(at_cancel["status"], "cancelled", "{at_cancel}");
    let (at_answer, at_end, last_ms) = watch
        .finish(answered, Duration::from_millis(500), async || {
            let j = api(
                &b.url,
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}"),
                None,
            )
            .await;
            !j["finished_at"].is_null()
        })
        .await;
    eprintln!(
        "dead owner: {written} written at the kill; the cancel answered with \
         pending {} (finished_at {}); PATCHes {at_answer} at the answer, {at_end} in the end; the \
         last write landed {} after the answer",
        at_cancel["counts"]["pending"],
        at_cancel["finished_at"],
        landed(last_ms)
    );
    assert!(
        last_ms.is_none_or(|ms| ms < 1000),
        "a write reached the target {last_ms:?} ms after the cancel answered"
    );

    let done = api(
        &b.url,
        reqwest::Method::GET,
        &format!("/v1/jobs/{id}"),
        None,
    )
    .await;
    let items = items_at(&b.url, id).await;
    assert_eq!(items.len(), 600);
    let roles = roles_by_user(&base).await;
    assert_record_matches_target(&done, &items, &roles, &staged.hooks, "Agent").await;
    assert!(done["counts"]["applied"].as_u64().unwrap() >= written as u64);
}

/// As above, but the target answers every call 503 when the cancelled job's chunks are settled,
/// so reading back the users whose write was sent fails. Their fate is unknown: they are
/// neither `cancelled` nor `failed` but stay pending, the chunk open and the job unfinished,
/// until a later claim of the chunk reads them back once the target answers again; then the
/// record matches the target. (Recording them `failed` was the lie of a chaos run: the target
/// had accepted those grants.)
#[tokio::test]
async fn a_cancelled_jobs_users_whose_read_back_fails_wait_for_a_later_read_not_failed() {
    let staged = stage_dead_owner().await;
    let (base, id, written) = (staged.emu.base_url(), &staged.id, staged.written);
    let client = reqwest::Client::new();
    let faults = |v: Value| {
        let client = client.clone();
        let url = format!("{base}/emulator/faults");
        async move {
            let r = client.post(url).json(&v).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    faults(json!({"fault_5xx": 1.0})).await;
    let b = start_service(staged.dir.path(), &staged.store, &base, &staged.extra).await;
    let at_cancel = api(
        &b.url,
        reqwest::Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(at_cancel["status"], "cancelled", "{at_cancel}");
    // Wait until a settle's user lookup ran out of retries (the dead owner's chunks are claimed
    // when their lease expires; a lookup is all a settle sends).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", b.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let unavailable: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("rolesync_scim_calls_total{")
                    && l.contains("route=\"/users\"")
                    && l.contains("outcome=\"unavailable\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if unavailable >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no read-back was tried within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = api(
        &b.url,
        reqwest::Method::GET,
        &format!("/v1/jobs/{id}"),
        None,
    )
    .await;
    assert_eq!(
        j["counts"]["failed"], 0,
        "a user whose fate is unknown is not failed: {j}"
    );
    assert!(
        j["finished_at"].is_null(),
        "the job cannot be finished while users' fates are unknown: {j}"
    );
    faults(json!({"fault_5xx": 0.0})).await;
    let done = wait_job_finished(&b.url, id).await;
    let items = items_at(&b.url, id).await;
    assert_eq!(items.len(), 600);
    let roles = roles_by_user(&base).await;
    assert_record_matches_target(&done, &items, &roles, &staged.hooks, "Agent").await;
    assert!(done["counts"]["applied"].as_u64().unwrap() >= written as u64);
}

/// The job's stored read of grants (`directory_grants`): (user id, role), read straight from
/// the store.
async fn grants_saved(store: &str, job_id: &str) -> Vec<(String, String)> {
    use sqlx::Connection;
    let sql = "SELECT user_id, role FROM directory_grants WHERE job_id = $1";
    if store.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(store).await.unwrap();
        sqlx::query_as(sql)
            .bind(job_id)
            .fetch_all(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(store).await.unwrap();
        sqlx::query_as(sql)
            .bind(job_id)
            .fetch_all(&mut c)
            .await
            .unwrap()
    }
}

/// A replica is killed while it reads a job's grants (the Authorization path's read), with the
/// first page saved; a user's `Agent`, listed on that page, is then taken away by hand; another
/// replica plans the job again. Its read must start from scratch (the re-planning's first page
/// deletes the job's earlier read, `Store::save_plan_page`): a row the dead planner saved would
/// say the user still holds `Agent`, and the job (`Queue Member`, which brings `Agent` with it)
/// would grant only `Queue Member`, leaving the user without `Agent`. (Checked: without that
/// delete of `directory_grants`, the user ends with Employee and Queue Member only.)
#[tokio::test]
async fn a_replanned_jobs_read_of_grants_starts_from_scratch_not_from_a_dead_planners_rows() {
    let emu = emulator_with(EmulatorArgs {
        rate_limit_per_minute: 0,
        ..Default::default()
    })
    .await;
    let base = emu.base_url();
    // 600 users holding Employee and Agent: 1 200 grants, three pages of 500.
    let users = seed_users(&base, "G", 600).await;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_store(dir.path()).await;
    let env = [("ROLESYNC__TARGET__WRITE_API", "authorization")];
    let mut a = start_service_env(dir.path(), &db.url, &base, "", &env).await;
    let first = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/jobs",
        Some(("text/csv", csv_for(&users, "Agent", "Standard Agent"))),
    )
    .await;
    let first = wait_job_finished(&a.url, first["job_id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "succeeded", "{first}");

    // Every call now takes 2 s: the planner saves the first page of grants, then waits on the
    // others.
    let client = reqwest::Client::new();
    let faults = |v: Value| {
        let (client, url) = (client.clone(), format!("{base}/emulator/faults"));
        async move {
            let r = client.post(url).json(&v).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    faults(json!({"latency_ms": 2000})).await;
    let job = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/jobs",
        Some((
            "text/csv",
            csv_for(&users, "Queue Member", "Standard Agent"),
        )),
    )
    .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while grants_saved(&db.url, &id).await.is_empty() {
        assert!(Instant::now() < deadline, "no page of grants saved in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&a.child, "-KILL");
    wait_exit(&mut a.child, 10).await;
    faults(json!({"latency_ms": 0})).await;

    // A user the saved page says holds Agent loses it by hand.
    let saved: Vec<String> = grants_saved(&db.url, &id)
        .await
        .into_iter()
        .filter(|(_, role)| role == "Agent")
        .map(|(user, _)| user)
        .collect();
    let victim_id = saved
        .first()
        .expect("the saved page lists Agent grants")
        .clone();
    let token = client_token(&base, "rolesync-dev", "rolesync-dev-secret").await;
    let roles: Value = client
        .get(format!("{base}/api/v2/authorization/roles"))
        .query(&[("pageSize", "100")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = roles["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Agent")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client
        .put(format!(
            "{base}/api/v2/authorization/roles/{agent}/users/remove"
        ))
        .bearer_auth(&token)
        .json(&json!([victim_id]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let b = start_service_env(dir.path(), &db.url, &base, "", &env).await;
    let done = wait_job_finished(&b.url, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["strategy"], "grants", "{done}");
    let roles = roles_by_user(&base).await;
    for (user, held) in &roles {
        for role in ["Agent", "Queue Member"] {
            assert!(
                held.iter().any(|r| r == role),
                "{user} lacks {role}: {held:?} ({done})"
            );
        }
    }
    let items = items_at(&b.url, &id).await;
    let victim = items
        .iter()
        .find(|i| i["user_id"] == victim_id.as_str())
        .unwrap_or_else(|| panic!("no row for {victim_id}"));
    assert_eq!(victim["outcome"], "applied", "{victim}");
    assert_eq!(
        strs(&victim["roles_added"]),
        vec!["Agent", "Queue Member"],
        "{victim}"
    );
}
