//! What operators watch: `/metrics` after real jobs, and the dashboard and alert rules of
//! `deploy/` evaluated by a real Prometheus scraping a real rolesync.

use crate::helpers::{ADMIN_KEY, TestApp, TestOptions, csv_for, seed_n, spawn_app_with};
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

fn options() -> TestOptions {
    TestOptions {
        // A rate limit high enough not to slow the test, so that the emulator sends its
        // `inin-ratelimit-*` headers.
        emulator: EmulatorArgs {
            rate_limit_per_minute: 6000,
            ..EmulatorArgs::default()
        },
        ..Default::default()
    }
}

async fn scrape(app: &TestApp) -> String {
    app.client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample written exactly `series` (name and labels as rendered), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until every `(series, value)` holds (the store gauges are read at most once a
/// second), 20 s at most; returns the last scrape.
async fn scrape_until(app: &TestApp, expected: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(app).await;
        let missing: Vec<String> = expected
            .iter()
            .filter(|(s, v)| sample(&text, s) != Some(*v))
            .map(|(s, v)| format!("{s} {v} (got {:?})", sample(&text, s)))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never seen:\n{}\nin\n{text}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_after_a_job_show_every_family_with_its_values() {
    let app = spawn_app_with(options()).await;
    let users = seed_n(&app, "OBS", 3).await;
    let csv = format!(
        "{}\nOBS9999,Agent,No Such Tier\n",
        csv_for(&users, "Agent", "Standard Agent")
    );
    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().expect("job id").to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");

    let text = scrape_until(
        &app,
        &[
            ("rolesync_jobs{status=\"completed_with_errors\"}", 1.0),
            ("rolesync_jobs{status=\"running\"}", 0.0),
            ("rolesync_jobs{status=\"queued\"}", 0.0),
            ("rolesync_jobs_paused{reason=\"target_unavailable\"}", 0.0),
            ("rolesync_rows_pending", 0.0),
            ("rolesync_oldest_unfinished_job_age_seconds", 0.0),
            ("rolesync_webhook_outbox_pending", 0.0),
            ("rolesync_webhook_outbox_dead", 0.0),
            ("rolesync_store_up", 1.0),
        ],
    )
    .await;
    let has = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    has(
        &format!(
            "rolesync_build_info{{git_sha=\"{}\",version=\"{}\"}}",
            build_sha(&text),
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    // Three users: each looked up once and written once; the bad row never reached the target.
    has(
        "rolesync_scim_calls_total{method=\"PATCH\",outcome=\"ok\",route=\"/users/{id}\"}",
        3.0,
    );
    has("rolesync_assignments_total{outcome=\"applied\"}", 3.0);
    has("rolesync_assignments_total{outcome=\"rejected\"}", 1.0);
    has("rolesync_assignments_total{outcome=\"failed\"}", 0.0);
    has("rolesync_jobs_total{status=\"completed_with_errors\"}", 1.0);
    has("rolesync_scim_retries_total{reason=\"rate_limited\"}", 0.0);
    has("rolesync_scim_rate_limit_per_minute", 60000.0);
    // The emulator's window: 6000 allowed, some spent by this job.
    has("rolesync_scim_ratelimit_allowed", 6000.0);
    let remaining = sample(&text, "rolesync_scim_ratelimit_remaining").unwrap_or(-1.0);
    assert!(
        (5900.0..6000.0).contains(&remaining),
        "remaining {remaining}"
    );
    let reset = sample(&text, "rolesync_scim_ratelimit_reset_seconds").unwrap_or(-1.0);
    assert!((1.0..=60.0).contains(&reset), "reset {reset}");
    // Buckets: HTTP up to 300 s, SCIM from 5 ms to 30 s.
    assert!(text.contains("rolesync_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/jobs\",le=\"300\"} 1"), "{text}");
    assert!(text.contains("rolesync_scim_request_duration_seconds_bucket{method=\"PATCH\",route=\"/users/{id}\",le=\"0.005\"}"));
    assert!(text.contains("rolesync_scim_request_duration_seconds_bucket{method=\"PATCH\",route=\"/users/{id}\",le=\"30\"}"));
    // Process metrics, from /proc.
    let rss = sample(&text, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1_000_000.0, "rss {rss}");
    assert!(sample(&text, "process_open_fds").unwrap_or(0.0) > 0.0);
    // Bounded labels: no job id, user id or external id in any label value.
    let user_ids: Vec<String> = app
        .items(&id)
        .await
        .iter()
        .filter_map(|i| i["user_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(user_ids.len(), 3);
    for needle in user_ids
        .iter()
        .map(String::as_str)
        .chain([id.as_str(), "OBS0"])
    {
        assert!(
            !text.contains(needle),
            "{needle} in a metric label:\n{text}"
        );
    }
}

/// The git sha `rolesync_build_info` carries: hex digits, or `unknown` for a build without git.
fn build_sha(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("rolesync_build_info{"))
        .unwrap_or_default();
    let sha = line
        .split("git_sha=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_owned();
    assert!(
        sha == "unknown" || (!sha.is_empty() && sha.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    sha
}

#[tokio::test]
async fn store_gauges_show_a_job_held_for_approval_then_nothing_once_it_ends() {
    // A replace job removing roles from more users than the policy allows waits for approval:
    // a job that stays unfinished, with its rows pending, for as long as the test needs.
    let mut opts = options();
    opts.policy = include_str!("../../config/policy.toml")
        .replace("max_removed_users = 500", "max_removed_users = 2")
        .replace("max_removal_fraction = 0.2", "max_removal_fraction = 1.0");
    let app = spawn_app_with(opts).await;
    let seeds: Vec<(String, &[&str])> = (0..4)
        .map(|i| (format!("HELD{i}"), &["Agent", "Wrap Up"][..]))
        .collect();
    let seeds: Vec<(&str, &[&str])> = seeds.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    app.seed(&seeds).await;
    let users: Vec<String> = (0..4).map(|i| format!("HELD{i}")).collect();
    let resp = app
        .submit(
            "text/csv",
            "?mode=replace",
            csv_for(&users, "Agent", "Standard Agent"),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("job")["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    app.wait_for(&id, &["awaiting_approval"]).await;
    let text = scrape_until(
        &app,
        &[
            ("rolesync_jobs{status=\"awaiting_approval\"}", 1.0),
            ("rolesync_rows_pending", 4.0),
        ],
    )
    .await;
    let age = sample(&text, "rolesync_oldest_unfinished_job_age_seconds").unwrap_or(0.0);
    assert!(age > 0.0 && age < 60.0, "age {age}");

    let resp = app.post(&format!("/v1/jobs/{id}/cancel"), ADMIN_KEY).await;
    assert_eq!(resp.status(), 200);
    app.wait_finished(&id).await;
    scrape_until(
        &app,
        &[
            ("rolesync_jobs{status=\"awaiting_approval\"}", 0.0),
            ("rolesync_jobs{status=\"cancelled\"}", 1.0),
            ("rolesync_rows_pending", 0.0),
            ("rolesync_oldest_unfinished_job_age_seconds", 0.0),
        ],
    )
    .await;
}

// ----- a real Prometheus ------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The `prometheus` binary (`ROLESYNC_TEST_PROMETHEUS`, else on PATH). None, with the reason
/// printed, outside CI; in CI (`CI` set) its absence is a failure.
fn prometheus_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("ROLESYNC_TEST_PROMETHEUS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"));
    match std::process::Command::new(&candidate)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Some(candidate),
        result => {
            let reason = format!(
                "cannot run {} ({}): install Debian's prometheus package or set ROLESYNC_TEST_PROMETHEUS",
                candidate.display(),
                match result {
                    Ok(out) => format!("exit {}", out.status),
                    Err(e) => e.to_string(),
                }
            );
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("in CI nothing is skipped: {reason}");
            }
            println!("SKIPPED prometheus_evaluates_every_dashboard_query_and_rule: {reason}");
            None
        }
    }
}

/// A Prometheus server killed when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `binary` scraping `target` (host:port) every second, as job `rolesync`, with the
    /// rules of `deploy/prometheus/alerts.yml` evaluated every second.
    async fn start(binary: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: rolesync\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = repo("deploy/prometheus/alerts.yml").display(),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        // A free port: bound, read, released (Prometheus binds it a moment later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            _dir: dir,
        };
        prometheus
            .wait_for_data("the target is scraped", "up{job=\"rolesync\"} == 1")
            .await;
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// The instant vector `expr` evaluates to now, or Prometheus' error.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until `expr` returns data, 60 s at most.
    async fn wait_for_data(&self, what: &str, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.query(expr).await.is_ok_and(|r| !r.is_empty()) {
            self.before(deadline, what);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn before(&self, deadline: Instant, what: &str) {
        assert!(
            Instant::now() < deadline,
            "Prometheus: {what}: not within 60 s\n{}",
            self.log()
        );
    }
}

/// Metric names an expression reads: identifiers outside string literals that name rolesync's
/// or the process' series (`rolesync_…`, `process_…`) or recording rules (`rolesync:…`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut in_string: Option<char> = None;
    let mut flush = |word: &mut String| {
        if word.starts_with("rolesync_")
            || word.starts_with("rolesync:")
            || word.starts_with("process_")
        {
            names.insert(std::mem::take(word));
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        if let Some(q) = in_string {
            if c == '\\' {
                chars.next();
            } else if c == q {
                in_string = None;
            }
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            flush(&mut word);
            in_string = Some(c);
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word);
        }
    }
    flush(&mut word);
    names
}

/// (panel title, legend, expression) of every query of the dashboard, with Grafana's variables
/// given the values a viewer would: every instance, a one-minute rate window.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(repo("deploy/grafana/rolesync.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    let mut panels: Vec<Value> = dash["panels"].as_array().cloned().unwrap_or_default();
    let mut i = 0;
    while let Some(p) = panels.get(i).cloned() {
        i += 1;
        // Rows nest their panels.
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "a variable left unreplaced: {expr}");
            out.push((
                p["title"].as_str().unwrap_or_default().to_owned(),
                t["legendFormat"].as_str().unwrap_or_default().to_owned(),
                expr,
            ));
        }
    }
    out
}

/// Series names present in a scrape (`name{…} v` or `name v`).
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn summarize(result: &[Value]) -> String {
    let series: Vec<String> = result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| *k != "instance" && *k != "job")
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let value = s["value"][1].as_str().unwrap_or("?");
            let value = value
                .parse::<f64>()
                .map(|v| {
                    format!("{v:.4}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_owned()
                })
                .unwrap_or_else(|_| value.to_owned());
            if labels.is_empty() {
                value
            } else {
                format!("{{{labels}}} {value}")
            }
        })
        .collect();
    series.join("; ")
}

#[tokio::test]
async fn prometheus_evaluates_every_dashboard_query_and_rule() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let app = spawn_app_with(options()).await;
    let target = app.address.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&binary, &target).await;

    // Two jobs while Prometheus watches: the first makes the counters' series appear (a rate
    // sees no increase in a series' first sample), the second moves them, so that rates and
    // latencies have something to show.
    let first = seed_n(&app, "PRE", 2).await;
    let job = app
        .submit_csv(&csv_for(&first, "Agent", "Standard Agent"))
        .await;
    app.wait_finished(job["job_id"].as_str().expect("job id"))
        .await;
    prometheus
        .wait_for_data(
            "the first job's calls scraped",
            "rolesync_scim_requests_total{method=\"PATCH\"}",
        )
        .await;
    let users = seed_n(&app, "PROM", 40).await;
    let csv = format!(
        "{}\nPROM9999,Agent,No Such Tier\n",
        csv_for(&users, "Agent", "Standard Agent")
    );
    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().expect("job id").to_owned();
    app.wait_finished(&id).await;
    prometheus
        .wait_for_data(
            "the finished job is scraped",
            "max(rolesync_jobs{status=\"completed_with_errors\"}) == 1",
        )
        .await;
    prometheus
        .wait_for_data(
            "the second job's calls in a rate",
            "sum(rate(rolesync_scim_requests_total[1m])) > 0",
        )
        .await;
    prometheus
        .wait_for_data(
            "the latency recorded",
            "rolesync:scim_request_duration_seconds:p99_5m",
        )
        .await;

    // Every rule of alerts.yml is loaded and has been evaluated without error.
    let alerts_yml = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).expect("rules");
    let declared = alerts_yml
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- alert:") || l.starts_with("- record:")
        })
        .count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rules: Vec<Value> = loop {
        if let Ok(data) = prometheus.api("/api/v1/rules", &[]).await {
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            if rules.len() == declared && rules.iter().all(|r| r["health"] != "unknown") {
                break rules;
            }
        }
        prometheus.before(deadline, "every rule loaded and evaluated");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(declared >= 12, "{declared} rules in alerts.yml");
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|r| r["type"] == "recording")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let exposed = exposed_names(&scrape(&app).await);
    let mut failures = Vec::new();
    let unknown_names = |what: &str, expr: &str| -> Vec<String> {
        metric_names(expr)
            .into_iter()
            .filter(|name| {
                if name.contains(':') {
                    !recorded.contains(name)
                } else {
                    !exposed.contains(name)
                }
            })
            .map(|name| format!("{what}: {name} is not in /metrics (nor a recording rule)"))
            .collect()
    };
    for r in &rules {
        let name = r["name"].as_str().unwrap_or_default();
        let expr = r["query"].as_str().unwrap_or_default();
        if r["health"] != "ok" {
            failures.push(format!(
                "rule {name}: health {} ({})",
                r["health"], r["lastError"]
            ));
        }
        failures.extend(unknown_names(&format!("rule {name}"), expr));
        if let Err(e) = prometheus.query(expr).await {
            failures.push(format!("rule {name}: {e}"));
        }
    }

    // Every dashboard query evaluates without error and returns data; the summary is printed.
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "{} dashboard queries", queries.len());
    println!(
        "Dashboard queries after a job of {} rows ({} users, 1 row rejected):",
        users.len() + 1,
        users.len()
    );
    for (title, legend, expr) in &queries {
        failures.extend(unknown_names(&format!("panel {title:?}"), expr));
        match prometheus.query(expr).await {
            Ok(result) if result.is_empty() => {
                failures.push(format!("panel {title:?} ({legend}): no data for {expr}"))
            }
            Ok(result) => println!("  {title} [{legend}]: {}", summarize(&result)),
            Err(e) => failures.push(format!("panel {title:?} ({legend}): {e} in {expr}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn metric_names_skip_label_values_and_keep_recording_rules() {
    let names = metric_names(
        "sum(rate(rolesync_http_requests_total{status=~\"rolesync_x\"}[5m])) / rolesync:p95_5m \
         + process_open_fds",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "process_open_fds",
            "rolesync:p95_5m",
            "rolesync_http_requests_total"
        ]
    );
}
