//! Three `rolesync serve` replicas as real child processes on one database (through the
//! proxy), sharing one config apart from the port.
//!
//! Invariants:
//! - A replica keeps its port and config file across restarts, so the API client's list of
//!   URLs never changes; a killed replica's URL just refuses connections until it is back.
//! - Kills are SIGKILL (`Child::kill`): no graceful shutdown, no lease given back. The
//!   replica's chunks are only taken over once their leases expire (`store.lease_secs`).
//! - Each replica's stderr goes to `rolesync-<i>.log` in the run's directory, appended across
//!   restarts with a marker line, so a failed run's logs show every life of every replica.
//! - Dropping `Replicas` kills every child: a failed test leaves no process behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Replica {
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn start(&mut self) {
        if self.is_running() {
            return;
        }
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the replica's log");
        let _ = writeln!(
            log,
            "===== chaos: start #{} of the replica on port {} at {} ms =====",
            self.starts,
            self.port,
            crate::now_ms()
        );
        // CHAOS_ROLESYNC_BIN runs another build (a release binary, or an older commit's, to
        // show the audit catches what that commit got wrong).
        let bin = std::env::var("CHAOS_ROLESYNC_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_rolesync").to_owned());
        // Run from the run's own directory: `serve` also layers a `config/default.toml` of its
        // working directory, and a long run must not pick up a checkout changed under it (a
        // one-hour run once failed so: every restart after a merge refused the new keys).
        let dir = self.config.parent().unwrap_or(std::path::Path::new("."));
        let child = Command::new(bin)
            .current_dir(dir)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rolesync serve");
        self.child = Some(child);
    }

    /// SIGKILL, then reap the child.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The replicas, shared by the chaos timeline (kills, restarts) and the API client (URLs).
#[derive(Clone)]
pub struct Replicas {
    inner: Arc<Mutex<Vec<Replica>>>,
}

impl Replicas {
    /// Writes `config(port)` for each of `n` replicas into `dir`, starts them all.
    pub fn start(dir: &Path, n: usize, config: impl Fn(u16) -> String) -> Replicas {
        let mut list = Vec::new();
        for i in 0..n {
            let port = free_port();
            let path = dir.join(format!("rolesync-{i}.toml"));
            std::fs::write(&path, config(port)).expect("write a replica's config");
            let mut r = Replica {
                port,
                config: path,
                log: dir.join(format!("rolesync-{i}.log")),
                child: None,
                starts: 0,
            };
            r.start();
            list.push(r);
        }
        Replicas {
            inner: Arc::new(Mutex::new(list)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Replica>> {
        self.inner.lock().expect("replicas lock")
    }

    /// Every replica's URL, up or not (the client tries them in turn).
    pub fn urls(&self) -> Vec<String> {
        self.lock().iter().map(Replica::url).collect()
    }

    /// Indexes of the replicas whose process runs.
    pub fn running(&self) -> Vec<usize> {
        let mut l = self.lock();
        (0..l.len()).filter(|&i| l[i].is_running()).collect()
    }

    pub fn kill(&self, i: usize) {
        self.lock()[i].kill();
    }

    pub fn restart(&self, i: usize) {
        self.lock()[i].start();
    }

    pub fn start_all(&self) {
        for r in self.lock().iter_mut() {
            r.start();
        }
    }

    pub fn starts(&self) -> u32 {
        self.lock().iter().map(|r| r.starts).sum()
    }

    pub fn logs(&self) -> Vec<PathBuf> {
        self.lock().iter().map(|r| r.log.clone()).collect()
    }

    /// Waits until every replica answers `/readyz` 200, or the deadline passes. A replica
    /// that exits meanwhile (one started while the store was still cut stops with "cannot
    /// open the store") is started again, as an orchestrator would.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + within;
        loop {
            self.start_all();
            let mut not_ready = Vec::new();
            for url in self.urls() {
                let ok = matches!(
                    client.get(format!("{url}/readyz")).send().await,
                    Ok(r) if r.status() == 200
                );
                if !ok {
                    not_ready.push(url);
                }
            }
            if not_ready.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "replicas not ready within {within:?}: {not_ready:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn kill_all(&self) {
        for r in self.lock().iter_mut() {
            r.kill();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}
