//! `rolesync demo`: the emulator and the service in one process, on a temporary SQLite file.
//! Seeds the emulator's org, submits `examples/assignments.csv`, shows progress, and prints the
//! summary, a sample of rejected rows with their reasons, and the SCIM calls the emulator saw.

use crate::client::{Client, ClientArgs, SubmitOptions};
use crate::exit::Exit;
use genesys_cloud_emulator::{self as emulator, EmulatorArgs};
use rolesync::configuration::Settings;
use rolesync::domain::Outcome;
use rolesync::ingest::Format;
use rolesync::policy::Policy;
use rolesync::startup::Application;
use serde_json::{Value, json};

const SAMPLE: &str = include_str!("../../../examples/assignments.csv");
const POLICY: &str = include_str!("../../../config/policy.toml");

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Calls per minute allowed by the emulator and used by rolesync. Genesys allows 300; the
    /// demo defaults to more so that it takes seconds, not minutes.
    #[arg(long, default_value_t = 3000)]
    pub requests_per_minute: u32,
    /// Milliseconds of latency the emulator adds to every call.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// A batch file to submit instead of the built-in sample.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Export the demo's traces over OTLP/HTTP to this URL (`telemetry.otlp_endpoint`), e.g.
    /// `http://127.0.0.1:4318`.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<Exit> {
    let traces = rolesync::configuration::TelemetrySettings {
        otlp_endpoint: args.otlp_endpoint.clone().unwrap_or_default(),
        ..Default::default()
    };
    let telemetry = rolesync::telemetry::init_with_traces(
        rolesync::domain::LogFormat::Pretty,
        "warn",
        &traces,
    )?;
    let emulator = emulator::spawn(EmulatorArgs {
        rate_limit_per_minute: u64::from(args.requests_per_minute),
        latency_ms: args.latency_ms,
        ..EmulatorArgs::default()
    })
    .await?;
    let base = emulator.base_url();
    let http = reqwest::Client::new();
    let (seeded, preset) = seed(&http, &base).await?;

    let dir = tempfile_dir()?;
    let db = dir.join("rolesync.db");
    let api_key = format!("demo-{}", uuid::Uuid::new_v4().simple());
    // `await_user_secs = 0`: the sample's three users missing from the org are `not_found` at
    // once, as the demo means to show, instead of waiting a day for their accounts as joiners
    // do by default (README, "Joiners, movers and leavers").
    let settings = Settings::from_toml_overrides(&format!(
        r#"
        [server]
        bind = "127.0.0.1:0"
        [store]
        url = "sqlite://{db}"
        [target]
        scim_base = "{base}/api/v2/scim/v2"
        token_url = "{base}/oauth/token"
        requests_per_minute = {rpm}
        [sync]
        await_user_secs = 0
        [[auth.keys]]
        name = "demo"
        key_sha256 = "{digest}"
        scopes = ["admin"]
        "#,
        db = db.display(),
        rpm = args.requests_per_minute,
        digest = rolesync::http::auth::key_digest_hex(&api_key),
    ))?;
    let policy = Policy::from_toml_str(POLICY)?;
    let app = Application::build_with_policy(settings, policy, None).await?;
    let addr = app.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stop_app = stop.clone();
    let server = tokio::spawn(app.run_until_stopped(async move { stop_app.cancelled().await }));

    println!("rolesync demo");
    println!("  emulator   {base}  ({seeded} users seeded, {preset} already holding their roles)");
    println!("  service    http://{addr}  (SQLite at {})", db.display());
    println!(
        "  rate limit {} calls/min (Genesys Cloud: 300)",
        args.requests_per_minute
    );

    let (name, body) = match &args.file {
        Some(path) => (path.display().to_string(), tokio::fs::read(path).await?),
        None => (
            "examples/assignments.csv".to_owned(),
            SAMPLE.as_bytes().to_vec(),
        ),
    };
    let format = match &args.file {
        Some(path) => Format::from_path(path).unwrap_or(Format::Csv),
        None => Format::Csv,
    };
    let client = Client::new(&ClientArgs {
        url: format!("http://{addr}"),
        api_key,
    })?;
    let stats_before = stats_total(&http, &base).await?;
    let key = uuid::Uuid::new_v4().to_string();
    let job = client
        .submit(format, body, SubmitOptions::default(), &key)
        .await?;
    let id = job
        .get("job_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    println!("\nsubmitted {name}: job {id}");
    if let Some(e) = job.get("estimate").filter(|e| !e.is_null()) {
        println!("  estimate   {e}");
    }
    let job = client.wait(&id, None).await?;
    let calls = stats_total(&http, &base).await? - stats_before;

    print_summary(&job, calls);
    // One row of each reason, so every kind of problem shows once.
    let mut sample: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for outcome in [Outcome::Rejected, Outcome::NotFound, Outcome::Failed] {
        let items = client.items(&id, Some(outcome), 1000, None).await?;
        for item in items["items"].as_array().into_iter().flatten() {
            if seen.insert(item["reason"]["code"].as_str().unwrap_or("").to_owned()) {
                sample.push(item.clone());
            }
        }
    }
    sample.sort_by_key(|i| i["line"].as_i64().unwrap_or(0));
    println!("\none row of each kind that was not applied (GET /v1/jobs/{{id}}/items?outcome=…):");
    for item in &sample {
        println!(
            "  line {:>3}  {:<9} {:<21} {:<15} {:<25} {}",
            item["line"].as_i64().unwrap_or(0),
            item["external_id"].as_str().unwrap_or(""),
            item["role_template"].as_str().unwrap_or(""),
            item["license_tier"].as_str().unwrap_or(""),
            item["reason"]["code"].as_str().unwrap_or(""),
            item["reason"]["message"].as_str().unwrap_or(""),
        );
    }
    stop.cancel();
    let _ = server.await;
    telemetry.shutdown().await;
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    // The sample is wrong on purpose: rows rejected is the demo going as planned.
    Ok(match Exit::of_job(&job) {
        Exit::CompletedWithErrors => Exit::Success,
        other => other,
    })
}

fn print_summary(job: &Value, calls: u64) {
    let c = &job["counts"];
    println!(
        "\njob {}: {}",
        job["job_id"].as_str().unwrap_or(""),
        job["status"].as_str().unwrap_or("")
    );
    println!(
        "  rows       {} total: {} applied, {} unchanged, {} rejected, {} not found, {} failed",
        c["total"], c["applied"], c["unchanged"], c["rejected"], c["not_found"], c["failed"]
    );
    println!(
        "  users      {} synced: {} changed, {} already right (no write)",
        job["users"]["total"], job["users"]["changed"], job["users"]["unchanged"]
    );
    let users = job["users"]["total"].as_u64().unwrap_or(0).max(1);
    println!(
        "  SCIM calls {} seen by the emulator: {} by the job's users ({} retries, {} rate-limited) and {} for OAuth tokens\n             {:.2} calls per user synced; a lookup plus a write per row would have spent {}",
        calls,
        job["scim"]["requests"],
        job["scim"]["retries"],
        job["scim"]["rate_limited"],
        calls.saturating_sub(job["scim"]["requests"].as_u64().unwrap_or(0)),
        job["scim"]["requests"].as_u64().unwrap_or(0) as f64 / users as f64,
        2 * c["total"].as_u64().unwrap_or(0),
    );
    println!("  elapsed    {} s", job["elapsed_secs"]);
}

/// Seeds the org for the sample: every user of the sample but EMP-1291 … EMP-1293 (which show
/// `not_found`), plus one user with two accounts (`ambiguous_user`). Users EMP-1001 … EMP-1040
/// (but 1002 and 1003) already hold the roles the sample gives them, so they cost no write;
/// EMP-1288 holds `Reporting Auditor`, which the sample's `System Administrator` conflicts with.
async fn seed(http: &reqwest::Client, base: &str) -> anyhow::Result<(usize, usize)> {
    let mut users = Vec::new();
    let mut preset = 0;
    for n in 1001..=1290u32 {
        let roles: Vec<Value> = if n <= 1040 && n != 1002 && n != 1003 {
            preset += 1;
            vec![json!({"value": "Agent"})]
        } else if n == 1288 {
            // Granted by hand in Genesys: adding System Administrator would break SoD.
            vec![
                json!({"value": "Reporting"}),
                json!({"value": "Reporting Auditor"}),
            ]
        } else {
            Vec::new()
        };
        users.push(json!({
            "userName": format!("emp-{n}@example.com"),
            "externalId": format!("EMP-{n}"),
            "displayName": format!("Employee {n}"),
            "roles": roles,
        }));
    }
    users.push(json!({"userName": "emp-1300-b@example.com", "externalId": "EMP-1300", "displayName": "Employee 1300 (second account)"}));
    users.push(json!({"userName": "emp-1300@example.com", "externalId": "EMP-1300", "displayName": "Employee 1300"}));
    let resp = http
        .post(format!("{base}/emulator/users"))
        .json(&users)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "seeding the emulator failed: {}",
        resp.status()
    );
    Ok((users.len(), preset))
}

async fn stats_total(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let v: Value = http
        .get(format!("{base}/emulator/stats"))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["total"].as_u64().unwrap_or(0))
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("rolesync-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
