//! The random workload, through the API of whichever replica answers, and the API client
//! that counts every answer rolesync gave.
//!
//! Invariants:
//! - Every choice (what to submit, to whom, when) comes from the workload's seeded RNG.
//! - Every HTTP answer from rolesync is counted by status. A 5xx other than `503` with
//!   `Retry-After` is a finding (README, Store outages: a store failure is 503, never 500).
//! - A submission that may be retried on another replica carries one `Idempotency-Key`, so a
//!   lost answer never makes two jobs.
//! - Refusals the API documents (409 for a revert or reconcile that cannot run now, 429 for
//!   upload slots) are part of the game, not findings.

use crate::replicas::Replicas;
use crate::{ADMIN_KEY, Counters, PLAIN_WRITER_KEY, WRITER_KEY};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the harness saw of rolesync's answers.
#[derive(Default, Debug)]
pub struct ApiLog {
    pub by_status: BTreeMap<u16, u64>,
    pub connection_errors: u64,
    /// 5xx answers other than 503 with Retry-After, described.
    pub violations: Vec<String>,
}

pub enum Body {
    None,
    Json(Value),
    Csv(String),
}

#[derive(Clone)]
pub struct Api {
    replicas: Replicas,
    client: reqwest::Client,
    pub log: Arc<Mutex<ApiLog>>,
}

impl Api {
    pub fn new(replicas: Replicas) -> Api {
        Api {
            replicas,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            log: Arc::default(),
        }
    }

    /// Sends the request to the replicas in turn, starting at `start`, for up to `attempts`
    /// tries: a connection failure or a 503 moves on to the next one. Answers the status and
    /// the JSON body (Null when there is none), or None when no replica answered otherwise.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: &Body,
        start: usize,
        attempts: usize,
    ) -> Option<(u16, Value)> {
        let urls = self.replicas.urls();
        let idempotency = uuid::Uuid::new_v4().to_string();
        let mut last = None;
        for a in 0..attempts {
            let url = &urls[(start + a) % urls.len()];
            let mut req = self
                .client
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(key)
                .header("idempotency-key", &idempotency);
            req = match body {
                Body::None => req,
                Body::Json(v) => req.json(v),
                Body::Csv(s) => req.header("content-type", "text/csv").body(s.clone()),
            };
            let resp = match req.send().await {
                Ok(r) => r,
                Err(_) => {
                    self.log.lock().expect("api log").connection_errors += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp.headers().contains_key("retry-after");
            let text = resp.text().await.unwrap_or_default();
            {
                let mut log = self.log.lock().expect("api log");
                *log.by_status.entry(status).or_default() += 1;
                if status >= 500 && !(status == 503 && retry_after) {
                    let mut t = text.clone();
                    t.truncate(300);
                    log.violations
                        .push(format!("{method} {url}{path} answered {status}: {t}"));
                }
            }
            let v = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 503 {
                last = Some((status, v));
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            return Some((status, v));
        }
        last
    }

    /// `call` with many attempts, for the drain and the collection (the store is back).
    pub async fn get(&self, path: &str) -> Value {
        for round in 0..20 {
            if let Some((200, v)) = self
                .call(reqwest::Method::GET, path, ADMIN_KEY, &Body::None, round, 6)
                .await
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("GET {path}: no replica answered 200 in 20 rounds");
    }
}

/// Roles of `config/policy.toml` with a tier that entitles them (the privileged one apart).
const GRANTS: &[(&str, &str)] = &[
    ("Agent", "Standard Agent"),
    ("Queue Member", "Standard Agent"),
    ("Wrap Up", "Standard Agent"),
    ("Supervisor", "Supervisor"),
    ("Reporting", "Supervisor"),
    ("Reporting", "Auditor"),
    ("Reporting Auditor", "Auditor"),
];
const PRIVILEGED: (&str, &str) = ("System Administrator", "Administrator");

/// Unfinished jobs (not counting those awaiting approval) past which the workload submits
/// nothing new.
const MAX_BACKLOG: usize = 20;

pub struct Workload {
    pub api: Api,
    rng: StdRng,
    users: u32,
    counters: Counters,
    /// Jobs this workload made, by id, with what it meant them to be.
    pub jobs: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Workload {
    pub fn new(api: Api, seed: u64, users: u32, counters: Counters) -> Workload {
        Workload {
            api,
            rng: StdRng::seed_from_u64(seed),
            users,
            counters,
            jobs: Arc::default(),
        }
    }

    fn ext(&mut self) -> String {
        format!("EMP-{:06}", self.rng.random_range(1..=self.users))
    }

    fn distinct(&mut self, n: usize) -> Vec<String> {
        rand::seq::index::sample(&mut self.rng, self.users as usize, n)
            .into_iter()
            .map(|i| format!("EMP-{:06}", i + 1))
            .collect()
    }

    fn row(ext: &str, (role, tier): (&str, &str)) -> Value {
        json!({"external_id": ext, "role_template": role, "license_tier": tier})
    }

    /// A leaver: the user keeps no managed role.
    fn revoke(ext: &str) -> Value {
        json!({"external_id": ext, "action": "revoke"})
    }

    /// Submits rows as JSON or CSV (a coin), answers the new job's id.
    async fn submit(
        &mut self,
        label: &str,
        rows: Vec<Value>,
        mode: &str,
        dry_run: bool,
        key: &str,
    ) -> Option<String> {
        self.submit_as(label, rows, mode, dry_run, key, false).await
    }

    /// `submit`, optionally as the complete roster of managed users (`roster=full`: managed
    /// users it does not name become leavers).
    async fn submit_as(
        &mut self,
        label: &str,
        rows: Vec<Value>,
        mode: &str,
        dry_run: bool,
        key: &str,
        roster: bool,
    ) -> Option<String> {
        let start = self.rng.random_range(0..3);
        let (path, body) = if self.rng.random_bool(0.5) {
            let mut body = json!({"mode": mode, "dry_run": dry_run, "assignments": rows});
            if roster {
                body["roster"] = json!("full");
            }
            ("/v1/jobs".to_owned(), Body::Json(body))
        } else {
            let mut csv = String::from("external_id,role_template,license_tier,action\n");
            for r in &rows {
                csv.push_str(&format!(
                    "{},{},{},{}\n",
                    r["external_id"].as_str().unwrap_or(""),
                    r["role_template"].as_str().unwrap_or(""),
                    r["license_tier"].as_str().unwrap_or(""),
                    r["action"].as_str().unwrap_or("assign")
                ));
            }
            let roster = if roster { "&roster=full" } else { "" };
            (
                format!("/v1/jobs?mode={mode}&dry_run={dry_run}{roster}"),
                Body::Csv(csv),
            )
        };
        let answer = self
            .api
            .call(reqwest::Method::POST, &path, key, &body, start, 6)
            .await;
        self.note(label, answer)
    }

    fn note(&mut self, label: &str, answer: Option<(u16, Value)>) -> Option<String> {
        match answer {
            Some((200 | 202, v)) => {
                let id = v["job_id"].as_str()?.to_owned();
                self.counters.bump(&format!("workload.{label}"));
                self.jobs
                    .lock()
                    .expect("jobs")
                    .insert(id.clone(), label.to_owned());
                Some(id)
            }
            Some((s, _)) => {
                self.counters.bump(&format!("workload.{label}.refused_{s}"));
                None
            }
            None => {
                self.counters.bump(&format!("workload.{label}.unanswered"));
                None
            }
        }
    }

    fn known(&self, label: Option<&str>) -> Vec<String> {
        self.jobs
            .lock()
            .expect("jobs")
            .iter()
            .filter(|(_, l)| label.is_none_or(|x| l.as_str() == x))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// One random action.
    pub async fn step(&mut self) {
        let pick = self.rng.random_range(0..100);
        match pick {
            0..3 => {
                // Leavers: a few users keep no managed role.
                let n = self.rng.random_range(1..=15);
                let rows = self.distinct(n).iter().map(|e| Self::revoke(e)).collect();
                self.submit("leavers", rows, "merge", false, WRITER_KEY)
                    .await;
            }
            3..5 => {
                // A full roster naming most users: the managed users it leaves out are
                // leavers (held for approval when they are too many).
                let n = self.rng.random_range(
                    (self.users as usize * 85 / 100)..=(self.users as usize * 98 / 100),
                );
                let g = *GRANTS.choose(&mut self.rng).expect("grants");
                let rows = self.distinct(n).iter().map(|e| Self::row(e, g)).collect();
                let dry = self.rng.random_bool(0.2);
                self.submit_as("roster", rows, "merge", dry, WRITER_KEY, true)
                    .await;
            }
            5..20 => {
                let ext = self.ext();
                let g = *GRANTS.choose(&mut self.rng).expect("grants");
                self.submit("hire", vec![Self::row(&ext, g)], "merge", false, WRITER_KEY)
                    .await;
            }
            20..35 => {
                let n = self.rng.random_range(10..=50);
                let rows = self.team_rows(n);
                self.submit("team", rows, "merge", false, WRITER_KEY).await;
            }
            35..42 => {
                // One role for hundreds of users: the planner picks bulk grants.
                let n = self.rng.random_range(200..=600);
                let g = *GRANTS.choose(&mut self.rng).expect("grants");
                let rows = self.distinct(n).iter().map(|e| Self::row(e, g)).collect();
                self.submit("rollout", rows, "merge", false, WRITER_KEY)
                    .await;
            }
            42..52 => {
                let n = if self.rng.random_bool(0.2) {
                    self.rng.random_range(100..=300)
                } else {
                    self.rng.random_range(5..=40)
                };
                let rows = self.team_rows(n);
                self.submit("replace", rows, "replace", false, WRITER_KEY)
                    .await;
            }
            52..59 => {
                // The plain writer may not grant System Administrator: awaiting_approval.
                let n = self.rng.random_range(1..=8);
                let rows = self
                    .distinct(n)
                    .iter()
                    .map(|e| Self::row(e, PRIVILEGED))
                    .collect();
                self.submit("privileged", rows, "merge", false, PLAIN_WRITER_KEY)
                    .await;
            }
            59..65 => {
                let n = self.rng.random_range(1..=100);
                let rows = self.team_rows(n);
                let mode = if self.rng.random_bool(0.5) {
                    "merge"
                } else {
                    "replace"
                };
                self.submit("dry_run", rows, mode, true, WRITER_KEY).await;
            }
            65..69 => {
                // A batch that gives someone both sides of the SoD rule: rejected rows.
                let ext = self.ext();
                let rows = vec![
                    Self::row(&ext, PRIVILEGED),
                    Self::row(&ext, ("Reporting Auditor", "Auditor")),
                    Self::row(&self.ext(), ("Reporting Auditor", "Auditor")),
                ];
                self.submit("sod", rows, "merge", false, WRITER_KEY).await;
            }
            69..74 => self.cancel().await,
            74..82 => self.revert().await,
            82..85 => {
                let dry = self.rng.random_bool(0.5);
                let mode = *["merge", "replace"].choose(&mut self.rng).expect("mode");
                let body = Body::Json(json!({"dry_run": dry, "mode": mode}));
                let start = self.rng.random_range(0..3);
                let answer = self
                    .api
                    .call(
                        reqwest::Method::POST,
                        "/v1/reconcile",
                        WRITER_KEY,
                        &body,
                        start,
                        6,
                    )
                    .await;
                self.note("reconcile", answer);
            }
            _ => self.approve_some(0.6).await,
        }
    }

    /// `n` distinct users, each with one to three grants (several rows for one user).
    fn team_rows(&mut self, n: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        for ext in self.distinct(n) {
            for _ in 0..self.rng.random_range(1..=3) {
                let g = *GRANTS.choose(&mut self.rng).expect("grants");
                rows.push(Self::row(&ext, g));
            }
        }
        rows
    }

    async fn cancel(&mut self) {
        let running = self
            .api
            .call(
                reqwest::Method::GET,
                "/v1/jobs?status=running&limit=50",
                ADMIN_KEY,
                &Body::None,
                self.rng.random_range(0..3),
                3,
            )
            .await;
        let Some((200, v)) = running else { return };
        let ids: Vec<String> = v["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["job_id"].as_str().map(str::to_owned))
            .collect();
        let Some(id) = ids.choose(&mut self.rng).cloned() else {
            return;
        };
        let start = self.rng.random_range(0..3);
        let answer = self
            .api
            .call(
                reqwest::Method::POST,
                &format!("/v1/jobs/{id}/cancel"),
                ADMIN_KEY,
                &Body::None,
                start,
                6,
            )
            .await;
        let what = match answer {
            Some((200, _)) => "workload.cancel",
            _ => "workload.cancel.refused",
        };
        self.counters.bump(what);
    }

    async fn revert(&mut self) {
        let candidates = self.known(None);
        let Some(id) = candidates.choose(&mut self.rng).cloned() else {
            return;
        };
        let force = self.rng.random_bool(0.3);
        let dry = self.rng.random_bool(0.15);
        let path = format!("/v1/jobs/{id}/revert?force={force}&dry_run={dry}");
        let start = self.rng.random_range(0..3);
        let answer = self
            .api
            .call(
                reqwest::Method::POST,
                &path,
                WRITER_KEY,
                &Body::None,
                start,
                6,
            )
            .await;
        // 409: not ended, a dry run, nothing applied, or being reverted: documented refusals.
        self.note(if force { "revert_force" } else { "revert" }, answer);
    }

    /// Approves (or now and then cancels) jobs awaiting approval, each with probability `p`.
    pub async fn approve_some(&mut self, p: f64) {
        let waiting = self
            .api
            .call(
                reqwest::Method::GET,
                "/v1/jobs?status=awaiting_approval&limit=100",
                ADMIN_KEY,
                &Body::None,
                self.rng.random_range(0..3),
                3,
            )
            .await;
        let Some((200, v)) = waiting else { return };
        let ids: Vec<String> = v["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["job_id"].as_str().map(str::to_owned))
            .collect();
        for id in ids {
            if !self.rng.random_bool(p) {
                continue;
            }
            let verb = if self.rng.random_bool(0.85) {
                "approve"
            } else {
                "cancel"
            };
            let start = self.rng.random_range(0..3);
            let answer = self
                .api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/{verb}"),
                    ADMIN_KEY,
                    &Body::None,
                    start,
                    6,
                )
                .await;
            let ok = matches!(answer, Some((200, _)));
            self.counters.bump(&format!(
                "workload.{verb}{}",
                if ok { "" } else { ".refused" }
            ));
        }
    }

    /// Jobs not ended and not waiting for an admin, among the newest 100; 0 when no replica
    /// answers (the workload then goes on: a cut must not stop it).
    async fn backlog(&self) -> usize {
        let answer = self
            .api
            .call(
                reqwest::Method::GET,
                "/v1/jobs?limit=100",
                ADMIN_KEY,
                &Body::None,
                0,
                2,
            )
            .await;
        match answer {
            Some((200, v)) => v["jobs"].as_array().map_or(0, |jobs| {
                jobs.iter()
                    .filter(|j| j["finished_at"].is_null() && j["status"] != "awaiting_approval")
                    .count()
            }),
            _ => 0,
        }
    }

    /// Runs random actions every 0.3–2 s until `stop`. Paced by the backlog: while
    /// `MAX_BACKLOG` jobs are unfinished, it only approves (an hour of submissions faster than
    /// three faulted replicas finish them left 110 jobs unfinished at the drain's end: the
    /// first hour-long run, docs/chaos.md).
    pub async fn run(mut self, stop: CancellationToken) -> Workload {
        while !stop.is_cancelled() {
            if self.backlog().await >= MAX_BACKLOG {
                self.counters.bump("workload.paced");
                self.approve_some(0.5).await;
            } else {
                self.step().await;
            }
            let pause = Duration::from_millis(self.rng.random_range(300..2000));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self
    }
}
