//! `rolesync sandbox-check` (the real binary) against a real emulator over HTTP: every
//! assumption confirmed on the emulator as it ships; one behaviour changed refutes exactly its
//! assumption (the audit trail's included: another entity type or action name, a delay, the
//! permission withheld); a run killed with SIGTERM after it changed the test user leaves it as it was; no
//! other user is touched (`/emulator/users` before and after, `/emulator/writes`); the calls
//! are counted on `/emulator/stats`.

use genesys_cloud_emulator::{EmulatorArgs, EmulatorHandle};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

const TEST_USER: &str = "SANDBOX-TEST-1";

struct Org {
    emulator: EmulatorHandle,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Org {
    /// An emulator with 30 users and the test user, who holds Employee and Reporting.
    async fn start(args: EmulatorArgs) -> Org {
        let emulator = genesys_cloud_emulator::spawn(EmulatorArgs { users: 30, ..args })
            .await
            .expect("emulator starts");
        let org = Org {
            emulator,
            http: reqwest::Client::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let resp = org
            .http
            .post(format!("{}/emulator/users", org.url()))
            .json(
                &json!([{"userName": "sandbox.test@example.com", "externalId": TEST_USER,
                          "displayName": "Sandbox Test", "roles": [{"value": "Reporting"}]}]),
            )
            .send()
            .await
            .expect("seed");
        assert!(resp.status().is_success());
        org
    }

    fn url(&self) -> String {
        self.emulator.base_url()
    }

    async fn admin(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .expect("admin call")
            .json()
            .await
            .expect("admin JSON")
    }

    /// Every user without its version (the test user's version moves; nothing else may).
    async fn users(&self) -> Vec<Value> {
        let mut users = self.admin("/emulator/users").await;
        let list = users.as_array_mut().expect("a list");
        for u in list.iter_mut() {
            if let Some(o) = u.as_object_mut() {
                o.remove("version");
            }
        }
        list.clone()
    }

    /// The configuration file, with `toml` after the target.
    fn config(&self, toml: &str) -> std::path::PathBuf {
        let base = self.url();
        let path = self.dir.path().join("rolesync.toml");
        std::fs::write(
            &path,
            format!(
                "[target]\nscim_base = \"{base}/api/v2/scim/v2\"\ntoken_url = \"{base}/oauth/token\"\n\
                 client_id = \"rolesync-dev\"\nclient_secret = \"rolesync-dev-secret\"\n{toml}"
            ),
        )
        .expect("config");
        path
    }

    fn command(&self, extra: &[&str]) -> tokio::process::Command {
        self.command_with("", extra)
    }

    fn command_with(&self, toml: &str, extra: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolesync"));
        cmd.args(["sandbox-check", "--output", "json", "--config"])
            .arg(self.config(toml))
            .arg("--trace")
            .arg(self.dir.path().join("trace.jsonl"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, extra: &[&str]) -> (i32, Value, String) {
        self.run_with("", extra).await
    }

    async fn run_with(&self, toml: &str, extra: &[&str]) -> (i32, Value, String) {
        let child = self
            .command_with(toml, extra)
            .spawn()
            .expect("the binary starts");
        finish(child).await
    }

    async fn post(&self, path: &str, body: Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .await
            .expect("admin call");
        assert!(
            resp.status().is_success(),
            "{path}: {:?}",
            resp.text().await
        );
    }
}

async fn finish(child: tokio::process::Child) -> (i32, Value, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("sandbox-check ends within 120 s")
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

const WRITES: &[&str] = &["--test-user", TEST_USER, "--i-understand-this-writes"];

/// (id, verdict) of every assumption.
fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["assumptions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_owned(),
                a["verdict"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const NOT_TESTABLE: &[&str] = &["remove_other_divisions", "group_grants_in_scim"];

/// Asserts that the test user is as seeded and nobody else changed, and that the write log
/// names the test user only.
async fn untouched(org: &Org, before: &[Value]) {
    assert_eq!(org.users().await, before, "the org's users changed");
    let writes = org.admin("/emulator/writes").await;
    let test_id = before
        .iter()
        .find(|u| u["externalId"] == TEST_USER)
        .map(|u| u["id"].clone())
        .expect("the test user");
    for w in writes["writes"].as_array().expect("writes") {
        assert_eq!(w["user_id"], test_id, "a write to another user: {w}");
    }
}

#[tokio::test]
async fn every_assumption_is_confirmed_on_the_emulator_and_only_the_test_user_is_written() {
    let org = Org::start(EmulatorArgs {
        rate_limit_per_minute: 300,
        ..Default::default()
    })
    .await;
    let before = org.users().await;
    let (code, report, stderr) = org.run(WRITES).await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    for (id, verdict) in verdicts(&report) {
        let expected = if NOT_TESTABLE.contains(&id.as_str()) {
            "not_testable"
        } else {
            "confirmed"
        };
        assert_eq!(verdict, expected, "{id}: {report:#}");
    }
    assert_eq!(verdicts(&report).len(), 22);
    // The audit trail's assumptions come last (a stable schema: new ones are appended).
    let ids: Vec<String> = verdicts(&report).into_iter().map(|(id, _)| id).collect();
    assert_eq!(&ids[15..], AUDIT);
    assert_eq!(report["restore"]["status"], "restored");
    untouched(&org, &before).await;
    // The calls the report counts are the ones the emulator saw (the token included).
    let stats = org.admin("/emulator/stats").await;
    assert_eq!(stats["total"], report["calls"], "{stats:#}");
    eprintln!("sandbox-check: {} calls on the emulator", report["calls"]);
    // The trace: one line per call but the token, redacted.
    let trace = std::fs::read_to_string(org.dir.path().join("trace.jsonl")).expect("trace");
    let lines: Vec<Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines.len() as u64 + 1,
        report["calls"].as_u64().unwrap_or(0)
    );
    let test_id = before
        .iter()
        .find(|u| u["externalId"] == TEST_USER)
        .and_then(|u| u["id"].as_str())
        .unwrap_or("?")
        .to_owned();
    for needle in [
        test_id.as_str(),
        TEST_USER,
        "sandbox.test@example.com",
        "Sandbox Test",
        "emp-000001@example.com",
    ] {
        assert!(!trace.contains(needle), "the trace holds {needle}");
    }
    assert!(trace.contains("<user-1>") && trace.contains("<role-Agent>"));
}

/// Runs against an emulator with one behaviour changed; asserts exactly `expected` is refuted.
async fn refutes_exactly(args: EmulatorArgs, expected: &str) {
    let org = Org::start(args).await;
    let before = org.users().await;
    run_refuting(&org, "", expected).await;
    untouched(&org, &before).await;
}

/// One run that refutes exactly `expected` and restores the test user; the report.
async fn run_refuting(org: &Org, toml: &str, expected: &str) -> Value {
    let (code, report, stderr) = org.run_with(toml, WRITES).await;
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(refuted(&report), [expected], "{report:#}");
    assert_eq!(report["restore"]["status"], "restored");
    report
}

fn refuted(report: &Value) -> Vec<String> {
    verdicts(report)
        .into_iter()
        .filter(|(_, v)| v == "refuted")
        .map(|(id, _)| id)
        .collect()
}

/// The finding `id` of a report.
fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["assumptions"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .unwrap_or(&Value::Null)
}

const AUDIT: &[&str] = &[
    "audit_view_permitted",
    "audit_queryable_within_lag",
    "audit_entity_type_role",
    "audit_member_actions",
    "audit_entity_is_role",
    "audit_names_user",
    "audit_names_own_client",
];

/// The audit trail written otherwise than rolesync reads it: each change refutes exactly its
/// assumption (the same org for every run: each run leaves out the messages of those before).
#[tokio::test]
async fn another_entity_type_or_action_name_refutes_exactly_that_audit_assumption() {
    let org = Org::start(EmulatorArgs::default()).await;
    let before = org.users().await;
    let as_shipped =
        json!({"entity_type": "Role", "add_action": "MemberAdd", "remove_action": "MemberRemove"});
    for (knobs, expected) in [
        (json!({"entity_type": "User"}), "audit_entity_type_role"),
        (
            json!({"add_action": "RoleAssigned"}),
            "audit_member_actions",
        ),
        // Swapped: a grant written as a removal and a removal as a grant.
        (
            json!({"add_action": "MemberRemove", "remove_action": "MemberAdd"}),
            "audit_member_actions",
        ),
    ] {
        org.post("/emulator/audits", as_shipped.clone()).await;
        org.post("/emulator/audits", knobs.clone()).await;
        let report = run_refuting(&org, "", expected).await;
        let f = finding(&report, expected);
        eprintln!("{knobs}: {}", f["evidence"]);
        for id in AUDIT.iter().filter(|id| **id != expected) {
            assert_eq!(
                finding(&report, id)["verdict"],
                "confirmed",
                "{id}: {report:#}"
            );
        }
    }
    untouched(&org, &before).await;
}

/// Messages queryable 2.5 s after their date: measured, and refuted while `drift.lag_secs` is
/// 0; confirmed with `drift.lag_secs = 5`.
#[tokio::test]
async fn a_late_audit_trail_refutes_the_delay_unless_drift_lag_secs_covers_it() {
    let org = Org::start(EmulatorArgs::default()).await;
    let before = org.users().await;
    org.post("/emulator/audits", json!({"delay_ms": 2_500}))
        .await;
    let report = run_refuting(&org, "", "audit_queryable_within_lag").await;
    let evidence = finding(&report, "audit_queryable_within_lag")["evidence"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let measured: i64 = evidence
        .split_once("queryable ")
        .and_then(|(_, rest)| rest.split_once(" ms"))
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or_else(|| panic!("no delay in {evidence}"));
    assert!(
        (2_500..30_000).contains(&measured),
        "measured {measured} ms: {evidence}"
    );
    assert!(
        evidence.contains("set drift.lag_secs to at least"),
        "{evidence}"
    );
    let (code, report, stderr) = org.run_with("[drift]\nlag_secs = 5\n", WRITES).await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(
        finding(&report, "audit_queryable_within_lag")["verdict"],
        "confirmed",
        "{report:#}"
    );
    untouched(&org, &before).await;
}

/// Without `audits:audit:view` the permission is refuted and the feed's other assumptions are
/// not testable; the rest of the check is unaffected.
#[tokio::test]
async fn without_audits_view_the_permission_is_refuted_and_the_feeds_shape_not_testable() {
    let org = Org::start(EmulatorArgs::default()).await;
    let before = org.users().await;
    org.post(
        "/emulator/faults",
        json!({"missing_permissions": ["audits:audit:view"]}),
    )
    .await;
    let report = run_refuting(&org, "", "audit_view_permitted").await;
    for (id, verdict) in verdicts(&report) {
        let expected = if id == "audit_view_permitted" {
            "refuted"
        } else if NOT_TESTABLE.contains(&id.as_str()) || AUDIT.contains(&id.as_str()) {
            "not_testable"
        } else {
            "confirmed"
        };
        assert_eq!(verdict, expected, "{id}: {report:#}");
    }
    assert!(
        finding(&report, "audit_view_permitted")["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("403") && e.contains("audits:audit:view")),
        "{report:#}"
    );
    untouched(&org, &before).await;
}

#[tokio::test]
async fn a_smaller_bulk_cap_refutes_exactly_that_assumption() {
    let args = EmulatorArgs {
        bulk_max_subjects: 50,
        ..Default::default()
    };
    refutes_exactly(args, "bulk_cap_at_least_configured").await;
}

#[tokio::test]
async fn a_smaller_grant_page_refutes_exactly_the_grant_listing() {
    let args = EmulatorArgs {
        grant_page_size_max: 100,
        ..Default::default()
    };
    refutes_exactly(args, "grant_in_home_division").await;
}

#[tokio::test]
async fn a_run_killed_with_sigterm_after_a_write_leaves_the_test_user_as_it_was() {
    let org = Org::start(EmulatorArgs::default()).await;
    let before = org.users().await;
    // Every API call takes 150 ms: the run lasts seconds, and the signal lands mid-run.
    let resp = org
        .http
        .post(format!("{}/emulator/faults", org.url()))
        .json(&json!({"latency_ms": 150}))
        .send()
        .await
        .expect("faults");
    assert!(resp.status().is_success());
    let child = org.command(WRITES).spawn().expect("the binary starts");
    let pid = child.id().expect("a pid");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let writes = org.admin("/emulator/writes").await;
        if writes["last_seq"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (code, report, stderr) = finish(child).await;
    assert_eq!(code, 4, "{report:#}\n{stderr}");
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["restore"]["status"], "restored", "{report:#}");
    untouched(&org, &before).await;
}

#[tokio::test]
async fn it_refuses_to_run_without_a_test_user_or_the_confirmation() {
    let org = Org::start(EmulatorArgs::default()).await;
    for args in [
        &["--i-understand-this-writes"][..],
        &["--test-user", TEST_USER][..],
    ] {
        let (code, _, stderr) = org.run(args).await;
        assert_eq!(code, 3, "{args:?}: {stderr}");
        assert!(stderr.contains("--test-user") || stderr.contains("--i-understand-this-writes"));
    }
    let stats = org.admin("/emulator/stats").await;
    assert_eq!(stats["total"], 0, "a refused run called the target");
}

#[tokio::test]
async fn a_restore_that_fails_says_what_to_set_by_hand() {
    let org = Org::start(EmulatorArgs::default()).await;
    let post = |body: Value| {
        org.http
            .post(format!("{}/emulator/faults", org.url()))
            .json(&body)
            .send()
    };
    assert!(
        post(json!({"latency_ms": 100}))
            .await
            .expect("faults")
            .status()
            .is_success()
    );
    let child = org.command(WRITES).spawn().expect("the binary starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while org.admin("/emulator/writes").await["last_seq"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From now on every SCIM write of the test user fails, and so does every removal through
    // the Authorization API: the role the first PATCH granted stays, and the restore cannot
    // take it away.
    let staged = post(
        json!({"failing_users": [{"external_id": TEST_USER, "status": 503}],
                             "missing_permissions": ["authorization:grant:delete"]}),
    )
    .await
    .expect("faults");
    assert!(staged.status().is_success());
    let (code, report, stderr) = finish(child).await;
    assert_eq!(code, 5, "{report:#}\n{stderr}");
    assert_eq!(report["restore"]["status"], "failed");
    let fix = report["restore"]["fix"].as_str().unwrap_or_default();
    for needle in [TEST_USER, "active = true", "Employee, Reporting", "PATCH "] {
        assert!(fix.contains(needle), "the fix lacks {needle:?}: {fix}");
    }
}
