//! `rolesync doctor` and `GET /v1/target/check` against the real emulator: a healthy org
//! passes in at most 10 calls (counted on `/emulator/stats`), and each staged fault turns
//! exactly its own line ✘, with its fix.

use crate::helpers::*;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

/// An app whose emulator sends rate-limit headers (300 a minute) and whose pacing stays under.
async fn spawn_limited(emulator: EmulatorArgs) -> TestApp {
    spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 300,
            ..emulator
        },
        config: "[target]\nrequests_per_minute = 280\n".into(),
        ..Default::default()
    })
    .await
}

/// `GET /v1/target/check` as admin, with the calls the emulator counted for it.
async fn check(app: &TestApp) -> (Value, u64) {
    app.reset_emulator_stats().await;
    let resp = app.get("/v1/target/check", ADMIN_KEY).await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    let counted = app.emulator_stats().await["total"].as_u64().unwrap();
    (report, counted)
}

/// (id, status) of every check.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The one failing check: asserts there is exactly one and that it is `id`.
fn only_failure<'a>(report: &'a Value, id: &str) -> &'a Value {
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["id"], id, "{report:#}");
    assert!(!failed[0]["fix"].as_str().unwrap().is_empty());
    failed[0]
}

/// `rolesync doctor --output json` with the app's settings (plus `env`); exit code and JSON.
async fn doctor_cli(app: &TestApp, env: &[(&str, &str)]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rolesync.toml");
    std::fs::write(&config, &app.settings_toml).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolesync"));
    cmd.args(["doctor", "--output", "json", "--config"])
        .arg(&config)
        .env("ROLESYNC__TARGET__REQUESTS_PER_MINUTE", "280")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("doctor ends within 60 s")
        .expect("doctor runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test]
async fn a_healthy_org_passes_within_ten_calls_over_the_api_and_the_command_line() {
    let app = spawn_limited(EmulatorArgs::default()).await;
    let (report, counted) = check(&app).await;
    let calls = report["calls"].as_u64().unwrap();
    eprintln!("doctor on a healthy emulator: {calls} calls (emulator counted {counted})");
    assert_eq!(calls, counted, "{report:#}");
    assert!(calls <= 10, "{report:#}");
    for (id, status) in statuses(&report) {
        let want = if id == "write_permissions" {
            "unknown"
        } else {
            "pass"
        };
        assert_eq!(status, want, "{id}: {report:#}");
    }
    // Not for a key without `admin`.
    assert_eq!(app.get("/v1/target/check", READER_KEY).await.status(), 403);
    assert_eq!(app.get("/v1/target/check", WRITER_KEY).await.status(), 403);

    // The command line reads the same config and prints the same report.
    app.reset_emulator_stats().await;
    let (code, cli) = doctor_cli(&app, &[]).await;
    assert_eq!(code, 0, "{cli:#}");
    let without_clock = |r: &Value| -> Vec<Value> {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] != "clock")
            .cloned()
            .collect()
    };
    assert_eq!(without_clock(&cli), without_clock(&report));
    assert_eq!(cli["calls"], report["calls"]);
    assert_eq!(statuses(&cli), statuses(&report));
    assert_eq!(app.emulator_stats().await["total"].as_u64().unwrap(), calls);
}

#[tokio::test]
async fn each_staged_fault_turns_its_own_line() {
    let app = spawn_limited(EmulatorArgs::default()).await;

    // A permission withheld: named, with the grant to make.
    app.set_faults(serde_json::json!({"missing_permissions": ["authorization:role:view"]}))
        .await;
    let (report, counted) = check(&app).await;
    let f = only_failure(&report, "read_permissions");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("authorization:role:view"),
        "{f}"
    );
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("authorization:role:view")
    );
    assert_eq!(report["calls"].as_u64().unwrap(), counted);
    app.set_faults(serde_json::json!({"missing_permissions": []}))
        .await;

    // No rate-limit headers.
    app.set_faults(serde_json::json!({"rate_limit_per_minute": 0}))
        .await;
    let (report, _) = check(&app).await;
    let f = only_failure(&report, "rate_limit");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("no inin-ratelimit-allowed"),
        "{f}"
    );
    app.set_faults(serde_json::json!({"rate_limit_per_minute": 300}))
        .await;

    // The target down: SCIM fails, the checks after it are not made, no call is retried.
    app.set_faults(serde_json::json!({"outage_secs": 60})).await;
    let (report, counted) = check(&app).await;
    let f = only_failure(&report, "scim");
    assert!(f["summary"].as_str().unwrap().contains("503"), "{f}");
    assert_eq!(report["calls"], 2, "{report:#}");
    assert_eq!(counted, 2);
    app.set_faults(serde_json::json!({"outage_secs": 0})).await;

    // A wrong client secret: the token line, from the command line (another config), exit 1.
    let (code, report) = doctor_cli(
        &app,
        &[("ROLESYNC__TARGET__CLIENT_SECRET", "not-the-secret")],
    )
    .await;
    assert_eq!(code, 1, "{report:#}");
    let f = only_failure(&report, "token");
    assert!(f["fix"].as_str().unwrap().contains("client_secret"), "{f}");
    assert_eq!(report["calls"], 1);

    // And back to all ✔.
    let (report, _) = check(&app).await;
    assert!(
        statuses(&report).iter().all(|(_, s)| s != "fail"),
        "{report:#}"
    );
}

/// The emulator's built-in catalog without `role`, written to a file in `dir`.
pub fn catalog_without(dir: &std::path::Path, role: &str) -> std::path::PathBuf {
    let roles: Vec<Value> = serde_json::from_str(include_str!(
        "../../crates/genesys-cloud-emulator/roles.json"
    ))
    .unwrap();
    let kept: Vec<Value> = roles.into_iter().filter(|r| r["name"] != role).collect();
    let path = dir.join("roles.json");
    std::fs::write(&path, serde_json::to_string(&kept).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn a_policy_role_absent_from_the_org_fails_its_line_and_shows_on_the_policy_page() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_limited(EmulatorArgs {
        roles_file: Some(catalog_without(dir.path(), "Wrap Up")),
        ..EmulatorArgs::default()
    })
    .await;
    let (report, counted) = check(&app).await;
    let f = only_failure(&report, "policy_roles");
    assert!(
        f["summary"].as_str().unwrap().contains("\"Wrap Up\""),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("unknown_target_role"));
    assert_eq!(report["calls"].as_u64().unwrap(), counted);

    // The console's policy page shows the same difference.
    let cookie = crate::console::signed_in(&app, READER_KEY).await;
    let page = crate::console::html(&app, &cookie, "/ui/policy").await;
    assert_eq!(
        crate::console::field(&page, "org.missing"),
        "Wrap Up",
        "{page}"
    );
    assert_eq!(
        crate::console::field(&page, "org.unmanaged"),
        "none",
        "{page}"
    );
}

#[tokio::test]
async fn with_the_authorization_path_a_grants_page_is_read_and_its_permission_checked() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 300,
            ..EmulatorArgs::default()
        },
        config: "[target]\nrequests_per_minute = 280\nwrite_api = \"authorization\"\n".into(),
        ..Default::default()
    })
    .await;
    let (report, counted) = check(&app).await;
    assert_eq!(report["calls"], 6, "{report:#}");
    assert_eq!(counted, 6);
    assert!(
        statuses(&report)
            .iter()
            .all(|(id, s)| s == "pass" || id == "write_permissions"),
        "{report:#}"
    );
    app.set_faults(serde_json::json!({"missing_permissions": ["authorization:grant:view"]}))
        .await;
    let (report, _) = check(&app).await;
    let f = only_failure(&report, "read_permissions");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("authorization:grant:view"),
        "{f}"
    );
}
