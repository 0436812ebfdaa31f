//! `rolesync serve` (the real binary) refuses the built-in development target unless `--dev`:
//! a production config that forgets `[target]` must not come up healthy against the emulator.

use crate::process::*;
use genesys_cloud_emulator::EmulatorArgs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A config with everything a service needs but the target, plus `target` (TOML lines).
fn write_config(dir: &Path, port: u16, target: &str) -> std::path::PathBuf {
    let config = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 2\n\
         [store]\nurl = \"sqlite://{db}\"\n[policy]\nfile = \"{policy}\"\n{target}\n",
        db = dir.join("rolesync.db").display(),
        policy = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.toml"),
    );
    let path = dir.join("rolesync.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `rolesync serve ARGS` in `dir` (so no `config/default.toml` of a checkout is near), with no
/// `ROLESYNC__…` variable inherited from the test's environment; standard error to `log`.
fn serve(dir: &Path, args: &[&str], log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolesync"));
    cmd.arg("serve")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ROLESYNC") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().unwrap()
}

/// Waits (at most 30 s) for `/readyz` to answer 200; false if the process exited first.
async fn ready(child: &mut Child, port: u16) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn stop(mut child: Child) {
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child, 15).await, Some(0));
}

#[tokio::test]
async fn serve_without_a_target_exits_1_naming_the_keys_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let no_target = write_config(dir.path(), free_port(), "");
    let half = dir.path().join("half.toml");
    std::fs::write(
        &half,
        "[target]\nscim_base = \"https://api.example.invalid/api/v2/scim/v2\"\n",
    )
    .unwrap();
    let all = [
        "target.scim_base",
        "target.token_url",
        "target.client_id",
        "target.client_secret",
    ];
    // No file at all; a file without [target]; a file naming only the address (the dev
    // credentials would still come from the defaults).
    let cases: [(Vec<String>, &[&str]); 3] = [
        (vec![], &all),
        (
            vec!["--config".into(), no_target.display().to_string()],
            &all,
        ),
        (
            vec!["--config".into(), half.display().to_string()],
            &all[1..],
        ),
    ];
    for (i, (args, keys)) in cases.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = serve(dir.path(), &args, &log);
        let code = wait_exit(&mut child, 20).await;
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert_eq!(code, Some(1), "case {i}: {stderr}");
        let named = stderr.split(" would come from").next().unwrap_or_default();
        for key in all {
            assert_eq!(
                named.contains(key),
                keys.contains(&key),
                "case {i}: {key}: {stderr}"
            );
        }
        assert!(
            stderr.contains("bearer_token")
                && stderr.contains("client_secret_file")
                && stderr.contains("--dev"),
            "case {i}: {stderr}"
        );
    }
}

#[tokio::test]
async fn serve_dev_starts_on_the_development_target_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let path = write_config(dir.path(), port, "");
    let mut child = serve(
        dir.path(),
        &["--config", path.to_str().unwrap(), "--dev"],
        &log,
    );
    let up = ready(&mut child, port).await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(up, "serve --dev did not start: {stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("development target is in use"),
        "{stderr}"
    );
    stop(child).await;
}

#[tokio::test]
async fn serve_starts_with_a_target_named_by_a_file_or_the_environment() {
    let emulator = emulator_with(EmulatorArgs {
        rate_limit_per_minute: 0,
        ..EmulatorArgs::default()
    })
    .await;
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let path = write_config(
        dir.path(),
        port,
        &format!(
            "[target]\nscim_base = \"{base}/api/v2/scim/v2\"\ntoken_url = \"{base}/oauth/token\"\n\
             client_id = \"rolesync-dev\"\nclient_secret = \"rolesync-dev-secret\"\n"
        ),
    );
    let mut child = serve(dir.path(), &["--config", path.to_str().unwrap()], &log);
    let up = ready(&mut child, port).await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(up, "serve with [target] did not start: {stderr}");
    assert!(!stderr.contains("development target"), "{stderr}");
    stop(child).await;

    // The same target from the environment alone, the file naming none.
    let port = free_port();
    let path = write_config(dir.path(), port, "");
    let mut cmd_child = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolesync"));
        cmd.args(["serve", "--config", path.to_str().unwrap()])
            .current_dir(dir.path())
            .env(
                "ROLESYNC__TARGET__SCIM_BASE",
                format!("{base}/api/v2/scim/v2"),
            )
            .env("ROLESYNC__TARGET__TOKEN_URL", format!("{base}/oauth/token"))
            .env("ROLESYNC__TARGET__CLIENT_ID", "rolesync-dev")
            .env("ROLESYNC__TARGET__CLIENT_SECRET", "rolesync-dev-secret")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        cmd.spawn().unwrap()
    };
    let up = ready(&mut cmd_child, port).await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(up, "serve with ROLESYNC__TARGET__* did not start: {stderr}");
    stop(cmd_child).await;
}
