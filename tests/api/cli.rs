//! The command line as a script uses it: the real built `rolesync` binary against a spawned
//! service and emulator. Exit codes, `--dry-run` and `--mode` for every file format,
//! Idempotency-Key, `hash-key` from standard input, the `jobs` commands, completions.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What a run of the binary left.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs `rolesync ARGS` against `app` with `key`, feeding `stdin`; at most 90 s.
async fn rolesync_as(app: &TestApp, key: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(args)
        .env("ROLESYNC_URL", &app.address)
        .env("ROLESYNC_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("rolesync {args:?} did not end within 90 s"))
        .expect("output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn rolesync(app: &TestApp, args: &[&str]) -> Run {
    rolesync_as(app, WRITER_KEY, args, b"").await
}

/// Writes `body` to a file named `name` in a fresh folder.
fn file(name: &str, body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    (dir, path.display().to_string())
}

/// Two users whose roles a real run would change: D1 gains Supervisor, D2 loses two roles in
/// `replace`.
async fn seed_two(app: &TestApp) {
    app.seed(&[
        ("D1", &["Agent"]),
        ("D2", &["Supervisor", "Agent", "Reporting"]),
    ])
    .await;
}

/// Submits `name` with `--dry-run` (and `extra` flags) through the binary, waits, and proves
/// nothing was written: a dry-run job whose rows are all planned, no PATCH at the emulator,
/// the users' roles as seeded.
async fn dry_run_writes_nothing(name: &str, body: &str, extra: &[&str]) -> Value {
    let app = spawn_app().await;
    seed_two(&app).await;
    let (_dir, path) = file(name, body);
    let mut args = vec!["--output", "json", "submit", &path, "--dry-run", "--wait"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--timeout", "60"]);
    let run = rolesync(&app, &args).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    assert_eq!(job["dry_run"], true, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["counts"]["planned"], 2, "{job}");
    let items = app.items(job["job_id"].as_str().unwrap()).await;
    assert!(items.iter().all(|i| i["outcome"] == "planned"), "{items:?}");
    assert_eq!(patches(&app.emulator_stats().await), 0, "nothing written");
    assert_eq!(app.roles_of("D1").await, vec![vec!["Agent", "Employee"]]);
    assert_eq!(
        app.roles_of("D2").await,
        vec![vec!["Agent", "Employee", "Reporting", "Supervisor"]]
    );
    job
}

#[tokio::test]
async fn dry_run_writes_nothing_from_a_csv_file() {
    let job = dry_run_writes_nothing(
        "batch.csv",
        "external_id,role_template,license_tier\nD1,Supervisor,Supervisor\nD2,Queue Member,Standard Agent\n",
        &["--mode", "replace"],
    )
    .await;
    assert_eq!(job["mode"], "replace");
}

#[tokio::test]
async fn dry_run_writes_nothing_from_an_ndjson_file() {
    let job = dry_run_writes_nothing(
        "batch.ndjson",
        "{\"external_id\":\"D1\",\"role_template\":\"Supervisor\",\"license_tier\":\"Supervisor\"}\n\
         {\"external_id\":\"D2\",\"role_template\":\"Queue Member\",\"license_tier\":\"Standard Agent\"}\n",
        &["--mode", "replace"],
    )
    .await;
    assert_eq!(job["mode"], "replace");
}

#[tokio::test]
async fn dry_run_writes_nothing_from_a_json_array_file() {
    let body = json!([
        {"external_id": "D1", "role_template": "Supervisor", "license_tier": "Supervisor"},
        {"external_id": "D2", "role_template": "Queue Member", "license_tier": "Standard Agent"},
    ]);
    let job = dry_run_writes_nothing("batch.json", &body.to_string(), &["--mode", "replace"]).await;
    assert_eq!(job["mode"], "replace");
}

/// The reported bug: an envelope without `dry_run`, submitted with `--dry-run`, wrote.
#[tokio::test]
async fn dry_run_writes_nothing_from_a_json_envelope_file() {
    let body = json!({"mode": "replace", "assignments": [
        {"external_id": "D1", "role_template": "Supervisor", "license_tier": "Supervisor"},
        {"external_id": "D2", "role_template": "Queue Member", "license_tier": "Standard Agent"},
    ]});
    let job = dry_run_writes_nothing("batch.json", &body.to_string(), &[]).await;
    assert_eq!(job["mode"], "replace", "the envelope's mode is kept");
}

#[tokio::test]
async fn a_mode_the_file_contradicts_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    seed_two(&app).await;
    let body = json!({"mode": "merge", "dry_run": false, "assignments": [
        {"external_id": "D1", "role_template": "Supervisor", "license_tier": "Supervisor"},
    ]});
    let (_dir, path) = file("batch.json", &body.to_string());
    let run = rolesync(&app, &["submit", &path, "--mode", "replace"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("400")
            && run.stderr.contains("query.mode")
            && run.stderr.contains("body.mode"),
        "{}",
        run.stderr
    );
    let list = rolesync(&app, &["--output", "json", "jobs", "list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.json()["jobs"], json!([]), "no job was created");

    // A mode outside the vocabulary is a usage error naming the accepted words.
    let run = rolesync(&app, &["submit", &path, "--mode", "sideways"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("merge") && run.stderr.contains("replace"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn exit_codes_tell_how_a_job_ended() {
    let app = spawn_app_with(TestOptions {
        emulator: genesys_cloud_emulator::EmulatorArgs {
            rate_limit_per_minute: 0,
            latency_ms: 100,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    seed_two(&app).await;

    // 0: succeeded.
    let (_d1, ok) = file(
        "ok.csv",
        "external_id,role_template,license_tier\nD1,Supervisor,Supervisor\n",
    );
    let run = rolesync(&app, &["submit", &ok, "--wait"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("succeeded"), "a table: {}", run.stdout);

    // 2: completed with errors (one row names a role the policy does not know).
    let (_d2, mixed) = file(
        "mixed.csv",
        "external_id,role_template,license_tier\nD1,Agent,Standard Agent\nD2,Astronaut,Standard Agent\n",
    );
    let run = rolesync(&app, &["--output", "json", "submit", &mixed, "--wait"]).await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["status"], "completed_with_errors");

    // 5: still running when --timeout runs out; `jobs show` says the same; the job goes on.
    let users = seed_n(&app, "T", 40).await;
    let (_d3, slow) = file("slow.csv", &csv_for(&users, "Agent", "Standard Agent"));
    let run = rolesync(
        &app,
        &[
            "--output",
            "json",
            "submit",
            &slow,
            "--wait",
            "--timeout",
            "0",
        ],
    )
    .await;
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    let id = run.json()["job_id"].as_str().unwrap().to_owned();
    let show = rolesync(&app, &["--output", "json", "jobs", "show", &id]).await;
    if show.json()["status"] != "succeeded" {
        assert_eq!(show.code, 5, "{}", show.stdout);
    }
    let watch = rolesync(&app, &["jobs", "watch", &id, "--timeout", "60"]).await;
    assert_eq!(watch.code, 0, "{}\n{}", watch.stdout, watch.stderr);
    assert_eq!(app.job(&id).await["status"], "succeeded");

    // 1: usage errors and a service that cannot be reached or refuses.
    let (_d4, txt) = file("batch.txt", "x");
    assert_eq!(rolesync(&app, &["submit", &txt]).await.code, 1);
    assert_eq!(rolesync(&app, &["submit"]).await.code, 1, "no file");
    assert_eq!(rolesync(&app, &["jobs", "frobnicate"]).await.code, 1);
    assert_eq!(rolesync(&app, &["--help"]).await.code, 0);
    let missing = rolesync(&app, &["jobs", "show", "no-such-job"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let run = rolesync(&app, &["jobs", "list", "--url", &dead]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot reach rolesync"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_held_job_exits_3_and_a_cancelled_one_4() {
    let app = spawn_app_with(TestOptions {
        policy: include_str!("../../config/policy.toml")
            .replace("max_removed_users = 500", "max_removed_users = 1")
            .replace("max_removal_fraction = 0.2", "max_removal_fraction = 1.0"),
        ..Default::default()
    })
    .await;
    seed_two(&app).await;
    app.seed(&[("D3", &["Agent", "Wrap Up"])]).await;
    let (_dir, path) = file(
        "replace.csv",
        "external_id,role_template,license_tier\nD2,Agent,Standard Agent\nD3,Agent,Standard Agent\n",
    );
    let run = rolesync(
        &app,
        &[
            "--output", "json", "submit", &path, "--mode", "replace", "--wait",
        ],
    )
    .await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let id = run.json()["job_id"].as_str().unwrap().to_owned();
    assert_eq!(rolesync(&app, &["jobs", "show", &id]).await.code, 3);

    // Approving needs `admin`: the writer's key is refused (exit 1).
    let refused = rolesync(&app, &["jobs", "approve", &id]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);

    let cancel = rolesync(&app, &["--output", "json", "jobs", "cancel", &id]).await;
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    assert_eq!(cancel.json()["status"], "cancelled");
    let watch = rolesync(&app, &["jobs", "watch", &id, "--timeout", "60"]).await;
    assert_eq!(watch.code, 4, "{}\n{}", watch.stdout, watch.stderr);
    assert_eq!(rolesync(&app, &["jobs", "show", &id]).await.code, 4);
    assert_eq!(patches(&app.emulator_stats().await), 0);
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_job() {
    let app = spawn_app().await;
    seed_two(&app).await;
    let (_dir, path) = file(
        "batch.csv",
        "external_id,role_template,license_tier\nD1,Supervisor,Supervisor\n",
    );
    let args = [
        "--output",
        "json",
        "submit",
        path.as_str(),
        "--idempotency-key",
        "retry-me",
    ];
    let first = rolesync(&app, &args).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stderr.contains("Idempotency-Key: retry-me"),
        "{}",
        first.stderr
    );
    let again = rolesync(&app, &args).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(first.json()["job_id"], again.json()["job_id"]);

    // Without a key one is made, printed on stderr (stdout stays the job), and works to retry.
    let fresh = rolesync(&app, &["--output", "json", "submit", &path]).await;
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    let key = fresh
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("Idempotency-Key: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key on stderr: {}", fresh.stderr))
        .to_owned();
    let job = fresh.json()["job_id"].clone();
    assert_ne!(job, first.json()["job_id"], "a new key is a new job");
    let retry = rolesync(
        &app,
        &[
            "--output",
            "json",
            "submit",
            &path,
            "--idempotency-key",
            &key,
        ],
    )
    .await;
    assert_eq!(retry.json()["job_id"], job);
    let list = rolesync(&app, &["--output", "json", "jobs", "list"]).await;
    assert_eq!(list.json()["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn hash_key_reads_the_key_from_standard_input() {
    let app = spawn_app().await;
    let run = rolesync_as(&app, WRITER_KEY, &["hash-key"], b"s3cret-key\n").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        rolesync::http::auth::key_digest_hex("s3cret-key")
    );
    let empty = rolesync_as(&app, WRITER_KEY, &["hash-key"], b"").await;
    assert_eq!(empty.code, 1);
    // The key on the command line is refused: argv is visible to every user of the machine.
    let argv = rolesync_as(&app, WRITER_KEY, &["hash-key", "s3cret-key"], b"").await;
    assert_eq!(argv.code, 1);
    assert!(
        !argv
            .stdout
            .contains(&rolesync::http::auth::key_digest_hex("s3cret-key"))
    );
}

#[tokio::test]
async fn jobs_items_prints_a_table_json_or_the_csv_file() {
    let app = spawn_app().await;
    seed_two(&app).await;
    let job = app
        .submit_csv(
            "external_id,role_template,license_tier\nD1,Supervisor,Supervisor\nD2,Astronaut,Standard Agent\n",
        )
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    app.wait_finished(&id).await;

    let table = rolesync(&app, &["jobs", "items", &id, "--outcome", "rejected"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.starts_with("   LINE  EXTERNAL_ID"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("Astronaut") && !table.stdout.contains("D1 "),
        "{}",
        table.stdout
    );

    let all = rolesync(&app, &["--output", "json", "jobs", "items", &id]).await;
    let rows = all.json();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    assert_eq!(rows[1]["reason"]["code"], "unknown_role");

    let csv = rolesync(
        &app,
        &["jobs", "items", &id, "--csv", "--outcome", "rejected"],
    )
    .await;
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "line,external_id,role_template,license_tier,outcome,reason,detail,action"
    );
    assert_eq!(lines.len(), 2, "{}", csv.stdout);
    assert!(lines[1].starts_with("3,D2,Astronaut,Standard Agent,rejected,unknown_role,"));

    let unknown = rolesync(&app, &["jobs", "items", &id, "--outcome", "lost"]).await;
    assert_eq!(unknown.code, 1);

    let list = rolesync(&app, &["jobs", "list", "--status", "completed_with_errors"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains(&id), "{}", list.stdout);
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    let app = spawn_app().await;
    for shell in ["bash", "zsh", "fish"] {
        let run = rolesync(&app, &["completions", shell]).await;
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(
            run.stdout.contains("rolesync") && run.stdout.contains("approve"),
            "{shell}: {}",
            run.stdout
        );
    }
    assert_eq!(rolesync(&app, &["completions", "tcsh"]).await.code, 1);
}

/// `jobs revert` and `reconcile`: a dry run then the real revert, waited for, with the exit
/// code of how each ended; a reconcile dry run that finds nobody drifted.
#[tokio::test]
async fn jobs_revert_and_reconcile_from_the_command_line() {
    // Removal bounds off: the revert takes a role from half this 2-user org.
    let app = spawn_app_with(TestOptions {
        policy: include_str!("../../config/policy.toml")
            .replace("max_removal_fraction = 0.2", "max_removal_fraction = 1.0"),
        ..Default::default()
    })
    .await;
    seed_two(&app).await;
    let (_d, ok) = file(
        "ok.csv",
        "external_id,role_template,license_tier\nD1,Queue Member,Standard Agent\n",
    );
    let run = rolesync(&app, &["--output", "json", "submit", &ok, "--wait"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let id = run.json()["job_id"].as_str().unwrap().to_owned();

    let dry = rolesync(
        &app,
        &[
            "--output",
            "json",
            "jobs",
            "revert",
            &id,
            "--dry-run",
            "--wait",
        ],
    )
    .await;
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    assert_eq!(dry.json()["kind"], "revert");
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["counts"]["planned"], 1);
    assert_eq!(
        app.roles_of("D1").await,
        vec![vec!["Agent", "Employee", "Queue Member"]]
    );

    let run = rolesync(&app, &["jobs", "revert", &id, "--wait"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("revert"), "a table: {}", run.stdout);
    assert_eq!(app.roles_of("D1").await, vec![vec!["Agent", "Employee"]]);
    // Refused by the service (a dry run has nothing to revert): exit 1 with the reason.
    let again = rolesync(
        &app,
        &["jobs", "revert", dry.json()["job_id"].as_str().unwrap()],
    )
    .await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("dry run"), "{}", again.stderr);

    let rec = rolesync(
        &app,
        &["--output", "json", "reconcile", "--dry-run", "--wait"],
    )
    .await;
    assert_eq!(rec.code, 0, "{}\n{}", rec.stdout, rec.stderr);
    assert_eq!(rec.json()["kind"], "reconcile");
    assert_eq!(rec.json()["users"]["changed"], 0);
}

/// A newcomer's first command, `rolesync demo` (the README's `cargo run --release -- demo`,
/// here the test build), run from an empty folder so that nothing of the checkout is needed at
/// run time: it ends by itself with 0 and prints the job's summary, with rows of every kind.
#[tokio::test]
async fn the_demo_runs_from_an_empty_folder_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("ROLESYNC_URL")
        .env_remove("ROLESYNC_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("rolesync demo did not end within 300 s"))
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for expected in [
        "rolesync demo",
        "submitted",
        "applied",
        "unchanged",
        "rejected",
        "not found",
        "SCIM calls",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    let status = stdout
        .lines()
        .find_map(|l| l.strip_prefix("job ").and_then(|l| l.split(": ").nth(1)))
        .unwrap_or_else(|| panic!("no job status in:\n{stdout}"));
    assert_eq!(status, "completed_with_errors", "{stdout}");
}
