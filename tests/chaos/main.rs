//! The chaos test: three real `rolesync serve` replicas on one PostgreSQL database (through a
//! proxy the test cuts), an in-process Genesys emulator with faults, a hand writer competing
//! for the same users, and a random workload, all driven by one seed; then a drain and an
//! audit of the record against the target's own write log. docs/chaos.md says what it checks
//! and how to run it (`CHAOS_SECS`, `CHAOS_SEED`, `CHAOS_DATABASE_URL`).
//!
//! Invariants of the harness itself:
//! - Every random choice comes from `StdRng`s seeded from the printed seed (the workload, the
//!   hand writer, the timeline and the emulator's fault RNG each get a seed drawn from it).
//!   Timing is not replayed: a seed replays the same plan, not the same interleaving.
//! - Nothing is asserted on a fixed sleep: the drain waits on conditions, with deadlines.
//! - A failed run keeps its directory (configs, replica logs) and its database, and names
//!   both; a passing run removes them.

mod audit;
mod hand;
mod proxy;
mod replicas;
mod webhooks;
mod workload;

use genesys_cloud_emulator::{self as emulator, EmulatorArgs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const ADMIN_KEY: &str = "chaos-admin-key";
/// Writes jobs and may grant privileged roles.
pub const WRITER_KEY: &str = "chaos-writer-key";
/// Writes jobs; its privileged grants wait for approval.
pub const PLAIN_WRITER_KEY: &str = "chaos-plain-writer-key";
const USERS: u32 = 1500;
const LEASE_SECS: u64 = 6;
const ROLESYNC_CLIENT: &str = "rolesync-dev";
const WEBHOOK_SECRET: &str = "whsec_Y2hhb3MtdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGU=";

/// Named counters shared by every part of the run (printed in the summary).
#[derive(Clone, Default)]
pub struct Counters(Arc<Mutex<BTreeMap<String, u64>>>);

impl Counters {
    pub fn bump(&self, name: &str) {
        *self
            .0
            .lock()
            .expect("counters")
            .entry(name.to_owned())
            .or_default() += 1;
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("counters").clone()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The run's own database: dropped when the test passed, kept (and named) when it failed.
struct Database {
    server: String,
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failed chaos run's database {}", self.name);
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on.
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("cannot drop the chaos database {}: {dropped:?}", self.name);
        }
    }
}

/// The run's directory (configs, replica logs): removed when the test passes, kept and named
/// when it panics anywhere (a replica that never got ready included).
struct RunDir(Option<tempfile::TempDir>);

impl RunDir {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("run dir").path()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take()
            && std::thread::panicking()
        {
            eprintln!("kept the failed chaos run's logs in {}", d.keep().display());
        }
    }
}

/// The server's URL without its password, for messages.
fn redacted(server: &str) -> String {
    match reqwest::Url::parse(server) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

/// Creates `rolesync_chaos_<random>` on the server, or says why it cannot.
async fn create_database(server: &str) -> Result<Database, String> {
    use sqlx::Connection;
    let shown = redacted(server);
    let connect = sqlx::PgConnection::connect(server);
    let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("{shown}: no answer within 10 s"))?
        .map_err(|e| format!("{shown}: {e}"))?;
    let name = format!("rolesync_chaos_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("CREATE DATABASE on {shown}: {e}"))?;
    Ok(Database {
        server: server.to_owned(),
        name,
    })
}

/// The policy of `config/policy.toml` with approval bounds a 1 500-user org crosses: large
/// removals wait for an admin, as privileged grants by the plain writer do.
fn policy() -> String {
    let p = include_str!("../../config/policy.toml");
    let (head, _) = p.split_once("[approval]").expect("policy has [approval]");
    format!("{head}[approval]\nmax_removal_fraction = 0.2\nmax_removed_users = 60\n")
}

fn config(port: u16, store: &str, base: &str, policy: &str, hook: &str) -> String {
    use rolesync::http::auth::key_digest_hex;
    format!(
        r#"
[server]
bind = "127.0.0.1:{port}"
shutdown_grace_secs = 2
[store]
url = "{store}"
lease_secs = {LEASE_SECS}
max_connections = 4
[target]
scim_base = "{base}/api/v2/scim/v2"
token_url = "{base}/oauth/token"
client_id = "{ROLESYNC_CLIENT}"
client_secret = "rolesync-dev-secret"
requests_per_minute = 60000
# Two calls in flight per replica: with a slow target a chunk runs for seconds, long enough
# to outlive a store cut longer than the lease (the race between a lost lease and its new owner).
max_concurrency = 2
write_api = "authorization"
bulk_max_subjects = 25
timeout_secs = 10
max_retry_secs = 30
[sync]
chunk_size = 20
[policy]
file = "{policy}"
[webhooks]
retry_schedule_secs = [1, 1, 2, 2, 3, 5, 5, 5, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
timeout_secs = 5
[[webhooks.endpoints]]
name = "chaos"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
[[auth.keys]]
name = "admin"
key_sha256 = "{admin}"
scopes = ["admin"]
[[auth.keys]]
name = "writer"
key_sha256 = "{writer}"
scopes = ["jobs:write", "jobs:read", "roles:privileged"]
[[auth.keys]]
name = "plain-writer"
key_sha256 = "{plain}"
scopes = ["jobs:write", "jobs:read"]
"#,
        admin = key_digest_hex(ADMIN_KEY),
        writer = key_digest_hex(WRITER_KEY),
        plain = key_digest_hex(PLAIN_WRITER_KEY),
    )
}

async fn set_faults(client: &reqwest::Client, base: &str, body: Value) {
    let r = client
        .post(format!("{base}/emulator/faults"))
        .json(&body)
        .send()
        .await
        .expect("POST /emulator/faults");
    assert!(r.status().is_success(), "faults {body}: {}", r.status());
}

/// What the timeline did, for the summary.
#[derive(Default, Debug)]
struct Timeline {
    cuts: u32,
    cuts_longer_than_lease: u32,
    kills: u32,
    outages: u32,
    knob_changes: u32,
    /// Replicas found exited by themselves and started again.
    exits: u32,
}

/// The faulty phase: store cuts, SIGKILLs and restarts, target outages and fault knobs, until
/// `secs` have passed. Returns what it did.
async fn timeline(
    rng: &mut StdRng,
    secs: u64,
    proxy: &proxy::Proxy,
    replicas: &replicas::Replicas,
    base: &str,
) -> Timeline {
    let client = reqwest::Client::new();
    let mut t = Timeline::default();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut down: Vec<(usize, Instant)> = Vec::new();
    // Faults set a moment after their event; awaited before the drain turns faults off.
    let mut later = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        // Replicas whose time is up come back, on the same port and config.
        let now = Instant::now();
        for (i, _) in down.iter().filter(|(_, at)| *at <= now) {
            replicas.restart(*i);
        }
        down.retain(|(_, at)| *at > now);
        // A replica that exited by itself (started while the store was cut, it stops with
        // "cannot open the store") is started again, as an orchestrator would.
        let up = replicas.running();
        for i in 0..replicas.urls().len() {
            if !up.contains(&i) && !down.iter().any(|(d, _)| *d == i) {
                replicas.restart(i);
                t.exits += 1;
            }
        }
        match rng.random_range(0..100) {
            0..30 if !proxy.is_cut() => {
                let ms = rng.random_range(3000..=8000);
                let blackhole = rng.random_bool(0.5);
                proxy.cut(Duration::from_millis(ms), blackhole);
                t.cuts += 1;
                if ms > LEASE_SECS * 1000 {
                    t.cuts_longer_than_lease += 1;
                }
                let how = if blackhole { "black hole" } else { "reset" };
                println!("chaos: store cut ({how}) for {ms} ms");
            }
            30..40 if !proxy.is_cut() => {
                // A partition: the store cut longer than the lease, and the target down for
                // the end of it, so both end together. Chunks whose reads were held by the
                // outage go on when it ends, while another replica takes their expired
                // leases over: the race between a lost lease and its new owner.
                let ms = rng.random_range(6500..=8000);
                let outage = rng.random_range(3..=6u64);
                proxy.cut(Duration::from_millis(ms), false);
                t.cuts += 1;
                t.cuts_longer_than_lease += 1;
                t.outages += 1;
                println!(
                    "chaos: store cut for {ms} ms with a target outage of {outage} s at its end"
                );
                let (client, base) = (client.clone(), base.to_owned());
                let delay = Duration::from_millis(ms.saturating_sub(outage * 1000));
                later.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    set_faults(&client, &base, json!({"outage_secs": outage})).await;
                }));
            }
            40..60 => {
                // One down at a time, sometimes two.
                let limit = if rng.random_bool(0.3) { 2 } else { 1 };
                let up = replicas.running();
                if down.len() < limit && !up.is_empty() {
                    let i = up[rng.random_range(0..up.len())];
                    replicas.kill(i);
                    let back = Duration::from_millis(rng.random_range(1000..=5000));
                    down.push((i, Instant::now() + back));
                    t.kills += 1;
                    println!("chaos: SIGKILL replica {i}, back in {back:?}");
                }
            }
            60..70 => {
                let s = rng.random_range(3..=6);
                set_faults(&client, base, json!({"outage_secs": s})).await;
                t.outages += 1;
                println!("chaos: target outage {s} s");
            }
            _ => {
                let pick = |rng: &mut StdRng, v: &[f64]| v[rng.random_range(0..v.len())];
                let knobs = json!({
                    "fault_5xx": pick(rng, &[0.0, 0.01, 0.03, 0.05]),
                    "fault_429": pick(rng, &[0.0, 0.01, 0.03, 0.05]),
                    "drop_connection": pick(rng, &[0.0, 0.005, 0.01, 0.02]),
                    "latency_jitter_ms": rng.random_range(0..=30),
                    // Now and then a slow target: chunks then run for seconds, so a store cut
                    // ends while a replica whose lease expired is still writing users.
                    "latency_ms": pick(rng, &[0.0, 0.0, 0.0, 20.0, 100.0, 300.0]) as u64,
                });
                set_faults(&client, base, knobs).await;
                t.knob_changes += 1;
            }
        }
    }
    for l in later {
        l.await.expect("a delayed fault");
    }
    t
}

fn ms_of(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn roles_of(v: &Value) -> audit::Roles {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

async fn all_jobs(api: &workload::Api) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=1000&cursor={c}"),
            None => "/v1/jobs?limit=1000".to_owned(),
        };
        let page = api.get(&path).await;
        jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return jobs,
        }
    }
}

async fn all_items(api: &workload::Api, job: &str) -> Vec<audit::Item> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs/{job}/items?limit=1000&cursor={c}"),
            None => format!("/v1/jobs/{job}/items?limit=1000"),
        };
        let page = api.get(&path).await;
        for i in page["items"].as_array().into_iter().flatten() {
            items.push(audit::Item {
                line: i["line"].as_i64().unwrap_or(-1),
                external_id: i["external_id"].as_str().unwrap_or("").to_owned(),
                outcome: i["outcome"].as_str().unwrap_or("").to_owned(),
                reason: i["reason"]["code"].as_str().map(str::to_owned),
                roles_added: roles_of(&i["roles_added"]),
                roles_removed: roles_of(&i["roles_removed"]),
                roles_after: i.get("roles_after").filter(|v| !v.is_null()).map(roles_of),
            });
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

fn job_of(v: &Value) -> audit::Job {
    let counts = v["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, n)| Some((k.clone(), n.as_i64()?)))
        .collect();
    audit::Job {
        id: v["job_id"].as_str().unwrap_or("").to_owned(),
        kind: v["kind"].as_str().unwrap_or("").to_owned(),
        status: v["status"].as_str().unwrap_or("").to_owned(),
        dry_run: v["dry_run"].as_bool().unwrap_or(false),
        created_ms: ms_of(&v["created_at"]).unwrap_or(0),
        finished_ms: ms_of(&v["finished_at"]),
        counts,
        write_api: v["estimate"]["write_api"].as_str().map(str::to_owned),
    }
}

/// The emulator's write log, every page.
async fn all_writes(client: &reqwest::Client, base: &str) -> (Vec<audit::Write>, u64) {
    let mut writes = Vec::new();
    let mut after = 0u64;
    let mut dropped;
    loop {
        let page: Value = client
            .get(format!("{base}/emulator/writes?after={after}&limit=10000"))
            .send()
            .await
            .expect("GET /emulator/writes")
            .json()
            .await
            .expect("write log JSON");
        dropped = page["dropped"].as_u64().unwrap_or(0);
        let last = page["last_seq"].as_u64().unwrap_or(0);
        let got = page["writes"].as_array().cloned().unwrap_or_default();
        for w in &got {
            let seq = w["seq"].as_u64().expect("write seq");
            after = after.max(seq);
            writes.push(audit::Write {
                seq,
                at_ms: w["at_ms"].as_i64().unwrap_or(0),
                client_id: w["client_id"].as_str().unwrap_or("").to_owned(),
                via: w["via"].as_str().unwrap_or("").to_owned(),
                user_id: w["user_id"].as_str().unwrap_or("").to_owned(),
                external_id: w["external_id"].as_str().unwrap_or("").to_owned(),
                roles_before: roles_of(&w["roles_before"]),
                roles_after: roles_of(&w["roles_after"]),
                correlation_id: w["correlation_id"].as_str().map(str::to_owned),
            });
        }
        if got.is_empty() || after >= last {
            return (writes, dropped);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(rand::random);
    println!("chaos seed: {seed} — replay with CHAOS_SEED={seed}");
    let secs = env_u64("CHAOS_SECS").unwrap_or(180);
    let started = Instant::now();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // 1. PostgreSQL, or a reason.
    let server = ["CHAOS_DATABASE_URL", "TEST_DATABASE_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db = match create_database(&server).await {
        Ok(db) => db,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
                panic!("chaos test needs PostgreSQL: {reason}");
            }
            println!("SKIPPED: chaos test needs PostgreSQL: {reason}");
            return;
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = RunDir(Some(
        tempfile::Builder::new()
            .prefix("rolesync-chaos-")
            .tempdir()
            .expect("temp dir"),
    ));
    println!(
        "chaos: {secs} s of faults; database {}, logs in {}",
        db.name,
        dir.path().display()
    );

    // 2. The proxy in front of PostgreSQL; the replicas' URL points at it.
    let url = reqwest::Url::parse(&server).expect("database URL");
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let proxy = proxy::Proxy::start(upstream).await;
    let mut store = url.clone();
    store.set_host(Some("127.0.0.1")).expect("set host");
    store.set_port(Some(proxy.addr.port())).expect("set port");
    store.set_path(&format!("/{}", db.name));

    // 3. The emulator, the hand writer's client beside rolesync's.
    let emu = emulator::spawn(EmulatorArgs {
        users: USERS as u64,
        rate_limit_per_minute: 0,
        seed: Some(rng.random()),
        extra_clients: vec![(hand::CLIENT_ID.into(), hand::CLIENT_SECRET.into())],
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let base = emu.base_url();
    let http = reqwest::Client::new();
    let receiver = webhooks::Receiver::start().await;

    // 4. Three replicas.
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy()).expect("write the policy");
    let policy_path = policy_path.display().to_string();
    let replicas = replicas::Replicas::start(dir.path(), 3, |port| {
        config(port, store.as_str(), &base, &policy_path, &receiver.url)
    });
    if let Err(e) = replicas.wait_ready(Duration::from_secs(120)).await {
        panic!("{e}; logs: {:?}", replicas.logs());
    }

    // 5, 6. The hand writer and the workload, each with its own seeded RNG.
    let counters = Counters::default();
    let stop = CancellationToken::new();
    let hand = hand::Hand::new(base.clone(), rng.random(), counters.clone()).await;
    let hand_task = tokio::spawn(hand.run(stop.clone()));
    let api = workload::Api::new(replicas.clone());
    let workload = workload::Workload::new(api.clone(), rng.random(), USERS, counters.clone());
    let workload_task = tokio::spawn(workload.run(stop.clone()));

    // 7. The faulty phase.
    set_faults(
        &http,
        &base,
        json!({"fault_5xx": 0.03, "fault_429": 0.03, "drop_connection": 0.01, "latency_jitter_ms": 30}),
    )
    .await;
    let t = timeline(&mut rng, secs, &proxy, &replicas, &base).await;
    stop.cancel();
    let mut workload = workload_task.await.expect("workload task");
    hand_task.await.expect("hand writer task");

    // 8. The drain: no fault, every replica up, approvals given, every job ended.
    let drain_started = Instant::now();
    set_faults(
        &http,
        &base,
        json!({"fault_5xx": 0.0, "fault_429": 0.0, "drop_connection": 0.0,
               "latency_jitter_ms": 0, "latency_ms": 0, "outage_secs": 0}),
    )
    .await;
    proxy.heal();
    replicas.start_all();
    if let Err(e) = replicas.wait_ready(Duration::from_secs(120)).await {
        panic!("{e}; logs: {:?}", replicas.logs());
    }
    let drain_deadline =
        Instant::now() + Duration::from_secs(env_u64("CHAOS_DRAIN_SECS").unwrap_or(180));
    let mut jobs;
    loop {
        workload.approve_some(1.0).await;
        jobs = all_jobs(&api).await;
        let open = jobs.iter().filter(|j| j["finished_at"].is_null()).count();
        if open == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 9. Collect, wait for the webhooks the record calls for, audit.
    let mut collected = audit::Collected {
        rolesync_client: ROLESYNC_CLIENT.to_owned(),
        jobs: jobs.iter().map(job_of).collect(),
        ..Default::default()
    };
    for j in &collected.jobs {
        let items = all_items(&api, &j.id).await;
        collected.items.insert(j.id.clone(), items);
    }
    let hooks_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        collected.events = receiver
            .events()
            .into_values()
            .map(|e| (e.event_type, e.data))
            .collect();
        if audit::check_webhooks(&collected).is_empty() || Instant::now() > hooks_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (writes, dropped) = all_writes(&http, &base).await;
    collected.writes = writes;
    let users: Value = http
        .get(format!("{base}/emulator/users"))
        .send()
        .await
        .expect("GET /emulator/users")
        .json()
        .await
        .expect("users JSON");
    for u in users.as_array().into_iter().flatten() {
        collected.final_roles.insert(
            u["externalId"].as_str().unwrap_or("").to_owned(),
            roles_of(&u["roles"]),
        );
    }
    collected.api_violations = api.log.lock().expect("api log").violations.clone();
    let mut report = audit::audit(&collected);
    if dropped > 0 {
        report.findings.push(format!(
            "the emulator's write log dropped {dropped} writes: the audit is incomplete"
        ));
    }

    // The summary.
    let labels = workload.jobs.lock().expect("jobs").clone();
    let mut by_kind: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut paths: BTreeMap<String, u64> = BTreeMap::new();
    for j in &collected.jobs {
        let label = labels.get(&j.id).cloned().unwrap_or_else(|| j.kind.clone());
        *by_kind
            .entry(label)
            .or_default()
            .entry(j.status.clone())
            .or_default() += 1;
        if !j.dry_run && j.counts.get("applied").copied().unwrap_or(0) > 0 {
            *paths
                .entry(j.write_api.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        }
    }
    let mut via: BTreeMap<(String, String), u64> = BTreeMap::new();
    for w in &collected.writes {
        *via.entry((w.client_id.clone(), w.via.clone())).or_default() += 1;
    }
    let correlated = collected
        .writes
        .iter()
        .filter(|w| w.correlation_id.is_some())
        .count();
    if secs >= 60 {
        for p in ["scim", "authorization"] {
            if !paths.contains_key(p) {
                report.findings.push(format!(
                    "no job applied anything through the {p} path: both write paths must be exercised"
                ));
            }
        }
    }
    let (by_status, connection_errors) = {
        let l = api.log.lock().expect("api log");
        (l.by_status.clone(), l.connection_errors)
    };
    println!("===== chaos summary =====");
    println!(
        "seed {seed} (replay with CHAOS_SEED={seed}), {secs} s of faults, drain {:?}, total {:?}",
        drain_started.elapsed(),
        started.elapsed()
    );
    println!("jobs by kind and final status: {by_kind:?}");
    println!("jobs that applied, by write path: {paths:?}");
    println!(
        "timeline: {} store cuts ({} longer than the {LEASE_SECS} s lease), {} SIGKILLs, {} exits restarted ({} starts in all), {} target outages, {} fault-knob changes",
        t.cuts,
        t.cuts_longer_than_lease,
        t.kills,
        t.exits,
        replicas.starts(),
        t.outages,
        t.knob_changes
    );
    println!("writes audited by client and path: {via:?} ({correlated} with a correlation id)");
    println!(
        "counters (workload, hand writer): {:?}",
        counters.snapshot()
    );
    println!(
        "API answers by status: {:?}, connection errors {}",
        by_status, connection_errors
    );
    println!(
        "webhook deliveries {}, distinct events {}",
        receiver.deliveries(),
        collected.events.len()
    );
    println!("exceptions taken: {:?}", report.excused);
    println!("findings: {}", report.findings.len());

    if report.findings.is_empty() {
        replicas.kill_all();
        emu.shutdown().await;
        return;
    }
    replicas.kill_all();
    // Everything the audit saw, for a look at the findings after the emulator is gone.
    let _ = std::fs::write(dir.path().join("collected.txt"), format!("{collected:#?}"));
    let _ = std::fs::write(dir.path().join("findings.txt"), report.findings.join("\n"));
    let shown = sample_by_kind(&report.findings, 8);
    panic!(
        "chaos seed {seed}: {} findings (replay with CHAOS_SEED={seed}; logs kept in {}):\n{}",
        report.findings.len(),
        dir.path().display(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Up to `each` findings of every kind (the text after the user and job, up to the first
/// colon), so that one kind of finding in the thousands does not hide another.
fn sample_by_kind(findings: &[String], each: usize) -> Vec<&String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    findings
        .iter()
        .filter(|f| {
            let kind = f.split(": ").nth(1).unwrap_or(f.as_str());
            let n = seen.entry(kind).or_default();
            *n += 1;
            *n <= each
        })
        .collect()
}
