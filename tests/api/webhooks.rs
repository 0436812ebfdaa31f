//! Audit webhooks end to end: a real rolesync delivers to a small axum receiver on
//! 127.0.0.1:0 that answers 200, 4xx, 5xx or slowly at will; signatures are checked by the
//! reference Standard Webhooks library (Python, `tests/support/verify_webhook.py`).

use crate::helpers::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

// ----- the receiver ------------------------------------------------------------------------

/// How the receiver answers the requests that arrive from now on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    Status(u16),
    /// Holds the request this long, then answers 200.
    Slow(Duration),
}

#[derive(Clone, Debug)]
struct Received {
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: String,
    /// What the receiver answered; None while it holds the request (or if the sender gave up).
    status: Option<u16>,
}

impl Received {
    fn id(&self) -> &str {
        self.headers
            .get("webhook-id")
            .map(String::as_str)
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone)]
struct ReceiverState {
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    answered: Arc<AtomicUsize>,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    addr: SocketAddr,
    state: ReceiverState,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn hook(State(s): State<ReceiverState>, headers: HeaderMap, body: String) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let index = {
        let mut received = s.received.lock().unwrap();
        received.push(Received {
            headers,
            body,
            status: None,
        });
        received.len() - 1
    };
    let answer = *s.answer.lock().unwrap();
    let status = match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
    };
    s.received.lock().unwrap()[index].status = Some(status.as_u16());
    s.answered.fetch_add(1, Ordering::SeqCst);
    status
}

impl Receiver {
    pub(crate) async fn start(answer: Answer) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap(), answer).await
    }

    async fn start_on(addr: SocketAddr, answer: Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = ReceiverState {
            answer: Arc::new(Mutex::new(answer)),
            received: Arc::default(),
            answered: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(hook))
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Receiver {
            url: format!("http://{addr}/hooks"),
            addr,
            state,
            stop,
        }
    }

    fn answer(&self, a: Answer) {
        *self.state.answer.lock().unwrap() = a;
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// The deliveries the receiver accepted (2xx), one per `webhook-id`, as a receiver that
    /// de-duplicates sees them. Every copy of an id, accepted or not, carries the same body.
    fn unique(&self) -> BTreeMap<String, Received> {
        let mut bodies: BTreeMap<String, String> = BTreeMap::new();
        let mut out: BTreeMap<String, Received> = BTreeMap::new();
        for r in self.received() {
            let body = bodies
                .entry(r.id().to_owned())
                .or_insert_with(|| r.body.clone());
            assert_eq!(*body, r.body, "webhook-id {} with two bodies", r.id());
            if r.status.is_some_and(|s| (200..300).contains(&s)) {
                out.insert(r.id().to_owned(), r);
            }
        }
        out
    }

    /// The events accepted, after de-duplication by id: (id, type, data), batches opened.
    pub(crate) fn events(&self) -> BTreeMap<String, (String, Value)> {
        let mut out = BTreeMap::new();
        for (id, r) in self.unique() {
            let body = r.json();
            if body["type"] == "batch" {
                for e in body["events"].as_array().unwrap() {
                    let eid = e["id"].as_str().unwrap().to_owned();
                    out.insert(
                        eid,
                        (e["type"].as_str().unwrap().to_owned(), e["data"].clone()),
                    );
                }
            } else {
                out.insert(
                    id,
                    (
                        body["type"].as_str().unwrap().to_owned(),
                        body["data"].clone(),
                    ),
                );
            }
        }
        out
    }

    /// How many distinct events of this type were accepted.
    pub(crate) fn count_of(&self, event_type: &str) -> usize {
        self.events()
            .values()
            .filter(|(t, _)| t == event_type)
            .count()
    }
}

/// A port nothing listens on (a receiver that is down), which a receiver may bind later.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub(crate) async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- configuration -----------------------------------------------------------------------

pub(crate) fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

pub(crate) struct Hook<'a> {
    pub(crate) name: &'a str,
    pub(crate) url: &'a str,
    pub(crate) secret: &'a str,
    pub(crate) previous: &'a [&'a str],
    pub(crate) events: &'a [&'a str],
}

pub(crate) fn endpoint_toml(h: &Hook<'_>) -> String {
    format!(
        "[[webhooks.endpoints]]\nname = \"{}\"\nurl = \"{}\"\nsecret = \"{}\"\nprevious_secrets = {:?}\nevents = {:?}\n",
        h.name, h.url, h.secret, h.previous, h.events
    )
}

/// Short retries so the tests see a whole schedule in seconds.
pub(crate) const FAST: &str = "[webhooks]\nretry_schedule_secs = [1, 1, 2]\ntimeout_secs = 5\n";

pub(crate) async fn app_with_hooks(hooks: &[Hook<'_>], webhooks: &str) -> TestApp {
    let mut config = webhooks.to_owned();
    for h in hooks {
        config.push_str(&endpoint_toml(h));
    }
    spawn_app_with(TestOptions {
        config,
        ..TestOptions::default()
    })
    .await
}

fn row(ext: &str, role: &str, tier: &str) -> Value {
    json!({"external_id": ext, "role_template": role, "license_tier": tier})
}

/// `n` users with no roles, all given `Agent`: `n` role changes.
async fn simple_job(app: &TestApp, prefix: &str, n: usize) -> String {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    let users: Vec<(&str, &[&str])> = ids.iter().map(|e| (e.as_str(), &[][..])).collect();
    app.seed(&users).await;
    let rows: Vec<Value> = ids
        .iter()
        .map(|e| row(e, "Agent", "Standard Agent"))
        .collect();
    let job = app
        .submit_json(json!({"mode": "merge", "assignments": rows}))
        .await;
    job["job_id"].as_str().unwrap().to_owned()
}

async fn deliveries(app: &TestApp, status: &str) -> Vec<Value> {
    let v: Value = app
        .get(
            &format!("/v1/webhooks/deliveries?status={status}&limit=1000"),
            READER_KEY,
        )
        .await
        .json()
        .await
        .unwrap();
    v["deliveries"].as_array().unwrap().clone()
}

/// Sum of the samples of `name` whose labels contain `labels` (e.g. `result="dead"`).
async fn metric(app: &TestApp, name: &str, labels: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.split(' ').next().unwrap_or("");
            (series == name || series.starts_with(&format!("{name}{{"))) && series.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ----- the independent verifier --------------------------------------------------------------

/// A Python with `standardwebhooks`: `ROLESYNC_TEST_PYTHON` (set by `.ci/run`), else the venv
/// `.ci/run` makes under `target/ci-venv`, else `python3`. None (with the reason printed) when
/// none has the package: the signature tests are then skipped, not failed — except in CI
/// (`CI` set), where a missing verifier is a failure with its reason.
fn python() -> Option<PathBuf> {
    let skip = |reason: String| -> Option<PathBuf> {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("in CI nothing is skipped: {reason}");
        }
        println!("SKIPPED: {reason}");
        None
    };
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python");
    let candidate = match std::env::var_os("ROLESYNC_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if venv.exists() => venv,
        _ => PathBuf::from("python3"),
    };
    match std::process::Command::new(&candidate)
        .args(["-c", "import standardwebhooks"])
        .output()
    {
        Ok(out) if out.status.success() => Some(candidate),
        Ok(out) => skip(format!(
            "`{} -c \"import standardwebhooks\"` failed ({}); run .ci/run or \
             pip install standardwebhooks==1.1.0 and set ROLESYNC_TEST_PYTHON",
            candidate.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => skip(format!("cannot run {}: {e}", candidate.display())),
    }
}

/// The reference library's verdict on each message, with `secret`.
fn verify_with_library(
    python: &std::path::Path,
    secret: &str,
    messages: &[Received],
) -> Vec<Result<(), String>> {
    use std::io::Write;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/verify_webhook.py");
    let input = json!({
        "secret": secret,
        "messages": messages.iter().map(|m| json!({"headers": m.headers, "body": m.body})).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verifier: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    verdicts
        .into_iter()
        .map(|v| {
            if v["ok"] == true {
                Ok(())
            } else {
                Err(v["error"].as_str().unwrap_or("").to_owned())
            }
        })
        .collect()
}

// ----- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn signatures_verify_with_the_reference_library_with_either_secret_during_a_rotation() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let (current, previous) = (new_secret(), new_secret());
    let app = app_with_hooks(
        &[Hook {
            name: "governance",
            url: &receiver.url,
            secret: &current,
            previous: &[&previous],
            events: &[],
        }],
        FAST,
    )
    .await;
    let id = simple_job(&app, "SIG", 3).await;
    app.wait_finished(&id).await;
    wait_until("job.finished", Duration::from_secs(20), || {
        receiver.count_of("job.finished") == 1
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 4, "3 role changes and the job's end");
    for r in &got {
        assert!(r.id().starts_with("msg_"), "{:?}", r.headers);
        assert_eq!(r.headers["content-type"], "application/json");
        let sigs: Vec<&str> = r.headers["webhook-signature"].split(' ').collect();
        assert_eq!(sigs.len(), 2, "one signature per secret");
        assert!(sigs.iter().all(|s| s.starts_with("v1,")));
        let body = r.json();
        assert!(
            body["timestamp"].is_string() && body["data"].is_object(),
            "{body}"
        );
    }

    let Some(python) = python() else { return };
    for secret in [&current, &previous] {
        for (r, verdict) in got.iter().zip(verify_with_library(&python, secret, &got)) {
            assert_eq!(verdict, Ok(()), "{} with {secret}", r.id());
        }
    }
    // And the library does refuse: another secret, a changed body, a changed id.
    let other = verify_with_library(&python, &new_secret(), &got[..1]);
    assert!(
        other[0]
            .as_ref()
            .is_err_and(|e| e.contains("No matching signature"))
    );
    // A message that names a user, so the edit changes the body whatever the arrival order.
    let victim = got.iter().find(|r| r.body.contains("SIG")).unwrap();
    let mut tampered = victim.clone();
    tampered.body = tampered.body.replacen("SIG", "SIH", 1);
    let mut other_id = got[0].clone();
    other_id
        .headers
        .insert("webhook-id".into(), "msg_someone_else".into());
    for verdict in verify_with_library(&python, &current, &[tampered, other_id]) {
        assert!(verdict.is_err());
    }
}

#[tokio::test]
async fn every_event_type_is_sent_and_an_endpoint_gets_only_the_types_it_asked_for() {
    let all = Receiver::start(Answer::Status(200)).await;
    let jobs_only = Receiver::start(Answer::Status(200)).await;
    let app = app_with_hooks(
        &[
            Hook {
                name: "all",
                url: &all.url,
                secret: &new_secret(),
                previous: &[],
                events: &[],
            },
            Hook {
                name: "jobs",
                url: &jobs_only.url,
                secret: &new_secret(),
                previous: &[],
                events: &["job.finished"],
            },
        ],
        FAST,
    )
    .await;
    app.seed(&[
        ("T1", &[]),
        ("T4", &["Reporting Auditor"]),
        ("T5", &[]),
        ("T5", &[]),
    ])
    .await;
    // Header is line 1.
    let csv = "external_id,role_template,license_tier\n\
               T1,Agent,Standard Agent\n\
               T2,Janitor,Standard Agent\n\
               T3,Agent,Standard Agent\n\
               T4,System Administrator,Administrator\n\
               T5,Agent,Standard Agent\n\
               T6,Agent\n";
    let job = app.submit_csv(csv).await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    wait_until("both endpoints", Duration::from_secs(20), || {
        all.count_of("job.finished") == 1 && jobs_only.count_of("job.finished") == 1
    })
    .await;
    // The dispatcher may still be sending the events that came before `job.finished`.
    wait_until("all events", Duration::from_secs(20), || {
        all.events().len() == 7
    })
    .await;

    let by_type = |t: &str| -> Vec<Value> {
        all.events()
            .into_values()
            .filter(|(ty, _)| ty == t)
            .map(|(_, d)| d)
            .collect()
    };
    let completed = by_type("role_sync.completed");
    assert_eq!(completed.len(), 1, "{completed:?}");
    let c = &completed[0];
    assert_eq!(c["job_id"], id.as_str());
    assert_eq!(c["external_id"], "T1");
    assert!(c["user_id"].is_string());
    assert_eq!(strs(&c["roles_before"]), vec!["Employee"]);
    assert_eq!(strs(&c["roles_after"]), vec!["Agent", "Employee"]);
    assert_eq!(strs(&c["roles_added"]), vec!["Agent"]);
    assert_eq!(strs(&c["roles_removed"]), Vec::<String>::new());
    for key in [
        "effective_permissions",
        "permissions_added",
        "permissions_removed",
    ] {
        assert!(c[key].is_array(), "{key}: {c}");
    }
    assert!(!c["permissions_added"].as_array().unwrap().is_empty());

    // Rejected: by the policy at planning (T2), at sync time by SoD (T4), unreadable row (T6).
    let mut rejected: Vec<(String, String, i64)> = by_type("role_sync.rejected")
        .iter()
        .map(|d| {
            (
                d["external_id"].as_str().unwrap().to_owned(),
                d["reason"]["code"].as_str().unwrap().to_owned(),
                d["line"].as_i64().unwrap(),
            )
        })
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        vec![
            ("T2".into(), "unknown_role".into(), 3),
            ("T4".into(), "sod_conflict".into(), 5),
            ("T6".into(), "malformed_row".into(), 7),
        ]
    );
    // Failed: no such user (T3), two users with one externalId (T5).
    let mut failed: Vec<(String, String, String)> = by_type("role_sync.failed")
        .iter()
        .map(|d| {
            (
                d["external_id"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
                d["reason"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        vec![
            ("T3".into(), "not_found".into(), "user_not_found".into()),
            ("T5".into(), "failed".into(), "ambiguous_user".into()),
        ]
    );
    let finished = by_type("job.finished");
    assert_eq!(finished[0]["job_id"], id.as_str());
    assert_eq!(finished[0]["status"], "completed_with_errors");
    assert_eq!(finished[0]["counts"]["applied"], 1);

    // The filtered endpoint: the job's end and nothing else.
    let only: Vec<String> = jobs_only.events().into_values().map(|(t, _)| t).collect();
    assert_eq!(only, vec!["job.finished"]);
    assert_eq!(jobs_only.received().len(), 1);
}

#[tokio::test]
async fn a_receiver_failing_for_a_while_gets_every_event_once_per_id_when_back_and_metrics_move() {
    let receiver = Receiver::start(Answer::Status(503)).await;
    let app = app_with_hooks(
        &[Hook {
            name: "flaky",
            url: &receiver.url,
            secret: &new_secret(),
            previous: &[],
            events: &[],
        }],
        "[webhooks]\nretry_schedule_secs = [1, 1, 1, 2, 2, 2, 2]\ntimeout_secs = 5\n",
    )
    .await;
    let n = 12;
    let id = simple_job(&app, "FLK", n).await;
    app.wait_finished(&id).await;
    // Down: every attempt answered 503; the outbox holds them and the gauges say so.
    wait_until("a few failed rounds", Duration::from_secs(20), || {
        receiver.received().len() >= 2 * (n + 1)
    })
    .await;
    assert_eq!(
        metric(&app, "rolesync_webhook_outbox_pending", "").await as usize,
        n + 1
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "rolesync_webhook_outbox_oldest_pending_seconds", "").await < 1.0 {
        assert!(Instant::now() < deadline, "oldest pending age stays 0");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metric(
            &app,
            "rolesync_webhook_deliveries_total",
            "result=\"retry\""
        )
        .await
            >= 2.0 * n as f64
    );
    assert!(deliveries(&app, "delivered").await.is_empty());

    // Back.
    receiver.answer(Answer::Status(200));
    wait_until("every event delivered", Duration::from_secs(30), || {
        receiver.count_of("job.finished") == 1 && receiver.events().len() == n + 1
    })
    .await;
    let events = receiver.events();
    let mut changed: Vec<String> = events
        .values()
        .filter(|(t, _)| t == "role_sync.completed")
        .map(|(_, d)| d["external_id"].as_str().unwrap().to_owned())
        .collect();
    changed.sort();
    let expected: Vec<String> = (0..n).map(|i| format!("FLK{i:04}")).collect();
    assert_eq!(
        changed, expected,
        "each role change exactly once after de-duplication"
    );
    assert!(
        receiver.received().len() > events.len(),
        "retried copies kept their id"
    );

    wait_until("outbox drained", Duration::from_secs(10), || true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let delivered = deliveries(&app, "delivered").await;
        if delivered.len() == n + 1 {
            assert!(
                delivered
                    .iter()
                    .all(|d| d["attempts"].as_i64().unwrap() >= 3),
                "{delivered:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "deliveries not marked delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "rolesync_webhook_outbox_pending", "").await != 0.0
        || metric(&app, "rolesync_webhook_outbox_oldest_pending_seconds", "").await != 0.0
    {
        assert!(
            Instant::now() < deadline,
            "gauges stay up after the outbox drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(
            &app,
            "rolesync_webhook_deliveries_total",
            "result=\"delivered\""
        )
        .await as usize,
        n + 1
    );
}

#[tokio::test]
async fn a_4xx_receiver_makes_dead_deliveries_and_redeliver_sends_them_again_with_the_same_id() {
    let receiver = Receiver::start(Answer::Status(400)).await;
    let app = app_with_hooks(
        &[Hook {
            name: "strict",
            url: &receiver.url,
            secret: &new_secret(),
            previous: &[],
            events: &["job.finished"],
        }],
        FAST,
    )
    .await;
    let id = simple_job(&app, "DEAD", 2).await;
    app.wait_finished(&id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = deliveries(&app, "dead").await;
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "no dead delivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d["attempts"], 1, "a 400 is not retried: {d}");
    assert_eq!(d["event_type"], "job.finished");
    assert_eq!(d["endpoint"], "strict");
    assert!(d["last_error"].as_str().unwrap().contains("400"), "{d}");
    assert_eq!(receiver.received().len(), 1);
    let event_id = d["event_id"].as_str().unwrap().to_owned();
    assert_eq!(receiver.received()[0].id(), event_id);
    assert!(metric(&app, "rolesync_webhook_deliveries_total", "result=\"dead\"").await >= 1.0);

    // Redelivery needs `admin`, and an existing event.
    let path = format!("/v1/webhooks/deliveries/{event_id}/redeliver");
    assert_eq!(app.post(&path, WRITER_KEY).await.status(), 403);
    assert_eq!(
        app.post("/v1/webhooks/deliveries/msg_nope/redeliver", ADMIN_KEY)
            .await
            .status(),
        404
    );
    receiver.answer(Answer::Status(200));
    let resp = app.post(&path, ADMIN_KEY).await;
    assert_eq!(resp.status(), 200);
    wait_until("the redelivery", Duration::from_secs(10), || {
        receiver.received().len() == 2
    })
    .await;
    let got = receiver.received();
    assert_eq!(got[1].id(), event_id, "same webhook-id");
    assert_eq!(got[1].body, got[0].body, "same body");
    assert_ne!(
        got[1].headers["webhook-timestamp"].len(),
        0,
        "signed again with a fresh timestamp"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries(&app, "delivered").await.len() != 1 {
        assert!(Instant::now() < deadline, "redelivery not recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deliveries(&app, "dead").await.is_empty());
}

#[tokio::test]
async fn a_5xx_receiver_gets_the_whole_schedule_then_the_delivery_is_dead() {
    let receiver = Receiver::start(Answer::Status(500)).await;
    let app = app_with_hooks(
        &[Hook {
            name: "broken",
            url: &receiver.url,
            secret: &new_secret(),
            previous: &[],
            events: &["job.finished"],
        }],
        FAST,
    )
    .await;
    let id = simple_job(&app, "FIVE", 1).await;
    app.wait_finished(&id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = deliveries(&app, "dead").await;
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "never dead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The first attempt and one per entry of the schedule [1, 1, 2].
    assert_eq!(dead[0]["attempts"], 4, "{dead:?}");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("no attempts left")
    );
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|r| r.id() == got[0].id()),
        "one webhook-id for every retry"
    );
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried_under_the_same_id() {
    let receiver = Receiver::start(Answer::Slow(Duration::from_secs(4))).await;
    let app = app_with_hooks(
        &[Hook {
            name: "sluggish",
            url: &receiver.url,
            secret: &new_secret(),
            previous: &[],
            events: &["job.finished"],
        }],
        "[webhooks]\nretry_schedule_secs = [1, 1, 1, 1]\ntimeout_secs = 1\n",
    )
    .await;
    let id = simple_job(&app, "SLO", 1).await;
    app.wait_finished(&id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = deliveries(&app, "pending").await;
        if let Some(d) = pending.iter().find(|d| d["attempts"].as_i64() >= Some(1)) {
            assert!(
                d["last_error"].as_str().unwrap().contains("cannot reach"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.answer(Answer::Status(200));
    wait_until("the retry", Duration::from_secs(20), || {
        receiver.count_of("job.finished") == 1
    })
    .await;
    let ids: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "every attempt under one webhook-id");
    assert!(receiver.received().len() >= 2);
}

#[tokio::test]
async fn batches_carry_several_events_under_their_own_id_and_their_rows_move_together() {
    let receiver = Receiver::start(Answer::Status(503)).await;
    let secret = new_secret();
    let app = app_with_hooks(
        &[Hook {
            name: "batched",
            url: &receiver.url,
            secret: &secret,
            previous: &[],
            events: &[],
        }],
        "[webhooks]\nretry_schedule_secs = [1, 1, 1, 2]\ntimeout_secs = 5\nbatch_max_events = 5\n",
    )
    .await;
    let n = 12;
    let id = simple_job(&app, "BAT", n).await;
    app.wait_finished(&id).await;
    // The receiver refuses the first attempts: each batch is sent again, same id, same body.
    wait_until("first attempts", Duration::from_secs(20), || {
        receiver.received().len() >= 3
    })
    .await;
    receiver.answer(Answer::Status(200));
    wait_until("every event", Duration::from_secs(30), || {
        receiver.events().len() == n + 1
    })
    .await;

    let unique = receiver.unique();
    let mut inner_ids = BTreeSet::new();
    for (batch_id, r) in &unique {
        let body = r.json();
        assert_eq!(body["type"], "batch", "{body}");
        let events = body["events"].as_array().unwrap();
        assert!((1..=5).contains(&events.len()), "{}", events.len());
        for e in events {
            let eid = e["id"].as_str().unwrap();
            assert_ne!(eid, batch_id, "a batch has its own id");
            assert!(inner_ids.insert(eid.to_owned()), "{eid} in two batches");
            assert!(e["type"].is_string() && e["timestamp"].is_string() && e["data"].is_object());
        }
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        assert!(
            rolesync::audit::signature::verify(
                &key,
                batch_id,
                ts,
                &r.body,
                &r.headers["webhook-signature"]
            ),
            "the batch is signed as a whole"
        );
    }
    let refused: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| r.status == Some(503))
        .collect();
    assert!(!refused.is_empty());
    for r in &refused {
        assert!(
            unique.contains_key(r.id()),
            "batch {} sent again under its id",
            r.id()
        );
    }
    if let Some(python) = python() {
        let got: Vec<Received> = unique.values().cloned().collect();
        for verdict in verify_with_library(&python, &secret, &got) {
            assert_eq!(verdict, Ok(()));
        }
    }

    // The outbox: every event delivered, in a batch; batch rows delivered too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let d = deliveries(&app, "delivered").await;
        if d.len() == n + 1 + unique.len() {
            break d;
        }
        assert!(Instant::now() < deadline, "{} delivered rows", d.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for d in &delivered {
        if d["event_type"] == "batch" {
            assert!(unique.contains_key(d["event_id"].as_str().unwrap()));
            assert!(d["batch_id"].is_null());
        } else {
            let batch = d["batch_id"].as_str().unwrap();
            let parent = delivered.iter().find(|b| b["event_id"] == batch).unwrap();
            assert_eq!(
                d["attempts"], parent["attempts"],
                "rows move with their batch"
            );
            assert_eq!(d["delivered_at_ms"], parent["delivered_at_ms"]);
        }
    }

    // Redelivering one event sends its whole batch again, under the batch's id.
    let member = delivered
        .iter()
        .find(|d| d["event_type"] != "batch")
        .unwrap();
    let batch_id = member["batch_id"].as_str().unwrap().to_owned();
    let before = receiver.received().len();
    let resp = app
        .post(
            &format!(
                "/v1/webhooks/deliveries/{}/redeliver",
                member["event_id"].as_str().unwrap()
            ),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(resp.status(), 200);
    wait_until("the batch again", Duration::from_secs(10), || {
        receiver.received().len() == before + 1
    })
    .await;
    let again = receiver.received().pop().unwrap();
    assert_eq!(again.id(), batch_id);
    assert_eq!(again.body, unique[&batch_id].body);
}

#[tokio::test]
async fn deliveries_pending_or_in_flight_at_a_restart_are_delivered_after_it() {
    // Holds every request: deliveries are in flight, or waiting their turn, at the stop.
    let receiver = Receiver::start(Answer::Slow(Duration::from_secs(60))).await;
    let mut app = app_with_hooks(
        &[Hook {
            name: "later",
            url: &receiver.url,
            secret: &new_secret(),
            previous: &[],
            events: &[],
        }],
        "[webhooks]\nretry_schedule_secs = [1, 1, 2]\ntimeout_secs = 60\nconcurrency_per_endpoint = 2\n",
    )
    .await;
    let n = 6;
    let id = simple_job(&app, "RST", n).await;
    app.wait_finished(&id).await;
    wait_until("two in flight", Duration::from_secs(10), || {
        receiver.received().len() == 2
    })
    .await;
    let in_flight: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert_eq!(deliveries(&app, "pending").await.len(), n + 1);

    receiver.answer(Answer::Status(200));
    let stopped = Instant::now();
    app.restart().await;
    println!("restart took {:?}", stopped.elapsed());
    wait_until(
        "every event after the restart",
        Duration::from_secs(20),
        || receiver.events().len() == n + 1,
    )
    .await;
    // Those cut off by the stop came again, same id; the lease was given back, so at once
    // rather than when it ran out.
    let again: BTreeSet<String> = receiver.received()[2..]
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert!(
        in_flight.is_subset(&again),
        "{in_flight:?} not in {again:?}"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "waited for the leases to run out"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries(&app, "delivered").await.len() != n + 1 {
        assert!(Instant::now() < deadline, "not all marked delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_waiting_for_a_receiver_that_is_down_are_delivered_after_a_restart() {
    let addr = closed_port().await;
    let mut app = app_with_hooks(
        &[Hook {
            name: "down",
            url: &format!("http://{addr}/hooks"),
            secret: &new_secret(),
            previous: &[],
            events: &[],
        }],
        "[webhooks]\nretry_schedule_secs = [1, 2, 2, 2, 2, 2, 2, 2]\ntimeout_secs = 5\n",
    )
    .await;
    let n = 4;
    let id = simple_job(&app, "DWN", n).await;
    app.wait_finished(&id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = deliveries(&app, "pending").await;
        if pending.len() == n + 1 && pending.iter().all(|d| d["attempts"].as_i64() >= Some(1)) {
            assert!(
                pending[0]["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("cannot reach")
            );
            break;
        }
        assert!(Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop_service().await;
    let receiver = Receiver::start_on(addr, Answer::Status(200)).await;
    assert_eq!(receiver.addr, addr);
    app.restart().await;
    wait_until(
        "every event after the restart",
        Duration::from_secs(30),
        || receiver.events().len() == n + 1,
    )
    .await;
}

/// Not a timed assertion: prints the figures (run with `--nocapture`), and asserts only what
/// cannot be noise: the job finished while the slow receiver still held its first request, and
/// the dead receiver got nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_slow_receiver_does_not_slow_the_sync() {
    let users: usize = std::env::var("ROLESYNC_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rounds: usize = std::env::var("ROLESYNC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut figures: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        // `none`: no endpoint at all, the baseline.
        for kind in ["none", "healthy", "dead", "slow"] {
            let receiver = Receiver::start(match kind {
                "slow" => Answer::Slow(Duration::from_secs(30)),
                _ => Answer::Status(200),
            })
            .await;
            let url = match kind {
                "dead" => format!("http://{}/hooks", closed_port().await),
                _ => receiver.url.clone(),
            };
            let secret = new_secret();
            let hook = Hook {
                name: kind,
                url: &url,
                secret: &secret,
                previous: &[],
                events: &[],
            };
            let hooks = if kind == "none" {
                &[][..]
            } else {
                std::slice::from_ref(&hook)
            };
            let mut app = app_with_hooks(hooks, "[webhooks]\ntimeout_secs = 60\n").await;
            let started = Instant::now();
            let id = simple_job(&app, &format!("P{round}{}", &kind[..1]), users).await;
            let done = app.wait_finished(&id).await;
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(done["status"], "succeeded");
            figures.entry(kind).or_default().push(secs);
            println!(
                "webhook receiver {kind:8} round {round}: {users} users synced in {secs:.2} s \
                 (job elapsed_secs {})",
                done["elapsed_secs"]
            );
            match kind {
                "slow" => {
                    assert!(
                        !receiver.received().is_empty(),
                        "the slow receiver was called"
                    );
                    assert_eq!(
                        receiver.answered(),
                        0,
                        "the job ended while it still held them"
                    );
                }
                "dead" => {
                    assert!(receiver.received().is_empty());
                    assert!(deliveries(&app, "delivered").await.is_empty());
                }
                _ => {}
            }
            // Stopped, so that its dispatcher does not weigh on the next measurement.
            app.stop_service().await;
        }
    }
    for (kind, secs) in &figures {
        let mut s = secs.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "webhook receiver {kind:8}: median {:.2} s over {} round(s) ({users} users)",
            s[s.len() / 2],
            s.len()
        );
    }
}

// ----- the audit log ------------------------------------------------------------------------

/// Forwards `POST /oauth/token` to the emulator and keeps the access tokens it hands out, so
/// the test knows the bearer token rolesync holds.
async fn token_proxy(emulator: String, tokens: Arc<Mutex<Vec<String>>>) -> String {
    async fn forward(
        State((emulator, tokens)): State<(String, Arc<Mutex<Vec<String>>>)>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, String) {
        let mut req = reqwest::Client::new()
            .post(format!("{emulator}/oauth/token"))
            .body(body);
        for name in ["authorization", "content-type"] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.to_str().unwrap());
            }
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let text = resp.text().await.unwrap();
        if let Some(t) = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        {
            tokens.lock().unwrap().push(t);
        }
        (status, text)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/oauth/token", axum::routing::post(forward))
        .with_state((emulator, tokens));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/oauth/token")
}

/// The log lines a child process wrote to stderr so far.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect_lines(stderr: tokio::process::ChildStderr) -> Lines {
    use tokio::io::AsyncBufReadExt;
    let lines: Lines = Arc::default();
    let out = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            out.lock().unwrap().push(line);
        }
    });
    lines
}

/// Runs the real binary with `ROLESYNC__LOG__FORMAT=json` (as deployed) and reads its log: one
/// `audit` line per role change, with the job, the user, the roles before and after, and the
/// `x-request-id` of the POST (generated, or the client's); no secret or token anywhere, at
/// `debug` level too.
#[tokio::test]
async fn the_audit_log_has_a_json_line_per_role_change_with_the_request_id_and_no_secret() {
    let client_secret = format!("client-secret-{}", uuid::Uuid::new_v4().simple());
    let api_key = format!("api-key-{}", uuid::Uuid::new_v4().simple());
    let webhook_secret = new_secret();
    let emulator = genesys_cloud_emulator::spawn(genesys_cloud_emulator::EmulatorArgs {
        client_id: "audit-test".into(),
        client_secret: client_secret.clone(),
        rate_limit_per_minute: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let token_url = token_proxy(emulator.base_url(), tokens.clone()).await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml");
    let config = format!(
        r#"
        [server]
        bind = "127.0.0.1:0"
        [store]
        url = "sqlite://{db}"
        [target]
        scim_base = "{base}/api/v2/scim/v2"
        token_url = "{token_url}"
        client_id = "audit-test"
        client_secret = "{client_secret}"
        requests_per_minute = 60000
        [policy]
        file = "{policy}"
        [[auth.keys]]
        name = "hr"
        key_sha256 = "{digest}"
        scopes = ["jobs:write", "jobs:read"]
        [[webhooks.endpoints]]
        name = "governance"
        url = "{hook}"
        secret = "{webhook_secret}"
        "#,
        db = dir.path().join("rolesync.db").display(),
        base = emulator.base_url(),
        policy = policy.display(),
        digest = rolesync::http::auth::key_digest_hex(&api_key),
        hook = receiver.url,
    );
    let config_path = dir.path().join("rolesync.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .current_dir(dir.path())
        .env("ROLESYNC__LOG__FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rolesync starts");
    let lines = collect_lines(child.stderr.take().unwrap());
    let json_lines = || -> Vec<Value> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut address = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while address.is_none() {
        address = json_lines()
            .iter()
            .find_map(|l| l["address"].as_str().map(|a| format!("http://{a}")));
        assert!(
            Instant::now() < deadline,
            "no `listening` line: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let address = address.unwrap();

    let seed = json!([
        {"userName": "au1@example.com", "externalId": "AU1", "roles": [{"value": "Employee"}]},
        {"userName": "au2@example.com", "externalId": "AU2", "roles": [{"value": "Employee"}, {"value": "Wrap Up"}]},
    ]);
    reqwest::Client::new()
        .post(format!("{}/emulator/users", emulator.base_url()))
        .json(&seed)
        .send()
        .await
        .unwrap();
    // An org large enough that a one-user replace job stays under the approval bound (20 %).
    let others: Vec<Value> = (0..10)
        .map(|i| serde_json::json!({"userName": format!("other{i}@example.com"), "externalId": format!("OTHER{i}")}))
        .collect();
    reqwest::Client::new()
        .post(format!("{}/emulator/users", emulator.base_url()))
        .json(&others)
        .send()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let submit = |body: Value, request_id: Option<&'static str>| {
        let mut req = http
            .post(format!("{address}/v1/jobs"))
            .bearer_auth(&api_key)
            .json(&body);
        if let Some(r) = request_id {
            req = req.header("x-request-id", r);
        }
        req.send()
    };
    let wait = |job: String| {
        let http = http.clone();
        let (address, api_key) = (address.clone(), api_key.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let v: Value = http
                    .get(format!("{address}/v1/jobs/{job}"))
                    .bearer_auth(&api_key)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["finished_at"].is_string() {
                    return v;
                }
                assert!(Instant::now() < deadline, "{v}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // No request id from the client: the generated one, as the response carries it.
    let resp = submit(
        json!({"mode": "merge", "assignments": [row("AU1", "Supervisor", "Supervisor")]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let job1 = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait(job1.clone()).await["status"], "succeeded");
    // The client's own request id is kept.
    let resp = submit(
        json!({"mode": "replace", "assignments": [row("AU2", "Agent", "Standard Agent")]}),
        Some("hr-batch-0042"),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "hr-batch-0042");
    let job2 = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait(job2.clone()).await["status"], "succeeded");
    // A hand change takes Supervisor from AU1; a reconcile finds the drift and puts it back.
    let base = emulator.base_url();
    let token = crate::process::client_token(&base, "audit-test", &client_secret).await;
    crate::process::set_roles_by_hand(&base, &token, "AU1", &["Employee", "Agent", "Reporting"])
        .await;
    let resp = http
        .post(format!("{address}/v1/reconcile"))
        .bearer_auth(&api_key)
        .json(&json!({"mode": "merge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job3 = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait(job3.clone()).await["status"], "succeeded");
    wait_until("webhooks", Duration::from_secs(20), || {
        receiver.count_of("job.finished") == 3
    })
    .await;
    // Audit lines are logged when their chunk commits, before its job can finish: all there.
    let _ = child.start_kill();
    let _ = child.wait().await;

    let all = json_lines();
    let audit: Vec<&Value> = all
        .iter()
        .filter(|l| l["target"] == "audit" && l["message"] == "roles changed")
        .collect();
    assert_eq!(audit.len(), 3, "one line per role change: {audit:?}");
    let drift: Vec<&Value> = all
        .iter()
        .filter(|l| l["target"] == "audit" && l["message"] == "drift detected")
        .collect();
    assert_eq!(drift.len(), 1, "one line per drifted user: {drift:?}");
    let roles = |v: &Value| -> Vec<String> {
        let mut r: Vec<String> = serde_json::from_str(v.as_str().unwrap()).unwrap();
        r.sort();
        r
    };
    let a1 = audit.iter().find(|l| l["job.id"] == job1.as_str()).unwrap();
    assert_eq!(a1["request.id"], generated.as_str(), "{a1}");
    assert_eq!(a1["user.external_id"], "AU1");
    assert!(a1["user.id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(roles(&a1["roles.before"]), vec!["Employee"]);
    assert_eq!(
        roles(&a1["roles.after"]),
        vec!["Agent", "Employee", "Reporting", "Supervisor"]
    );
    assert_eq!(
        roles(&a1["roles.added"]),
        vec!["Agent", "Reporting", "Supervisor"]
    );
    assert_eq!(a1["level"], "INFO");
    assert_eq!(a1["message"], "roles changed");
    let a2 = audit.iter().find(|l| l["job.id"] == job2.as_str()).unwrap();
    assert_eq!(a2["request.id"], "hr-batch-0042");
    assert_eq!(roles(&a2["roles.before"]), vec!["Employee", "Wrap Up"]);
    assert_eq!(roles(&a2["roles.after"]), vec!["Agent", "Employee"]);
    assert_eq!(roles(&a2["roles.removed"]), vec!["Wrap Up"]);
    assert_eq!(a2["job.mode"], "replace");
    let d = drift[0];
    assert_eq!(d["job.id"], job3.as_str(), "{d}");
    assert_eq!(d["user.external_id"], "AU1");
    assert_eq!(roles(&d["roles.missing"]), vec!["Supervisor"]);
    assert_eq!(d["fixed"], true);
    let a3 = audit.iter().find(|l| l["job.id"] == job3.as_str()).unwrap();
    assert_eq!(a3["user.external_id"], "AU1");
    assert_eq!(roles(&a3["roles.added"]), vec!["Supervisor"]);

    // Nothing secret in the whole log, at debug level.
    let text = lines.lock().unwrap().join("\n");
    let issued = tokens.lock().unwrap().clone();
    assert!(
        !issued.is_empty(),
        "rolesync fetched a token through the proxy"
    );
    let mut secrets = vec![
        client_secret.clone(),
        api_key.clone(),
        webhook_secret.clone(),
        webhook_secret.trim_start_matches("whsec_").to_owned(),
    ];
    secrets.extend(issued);
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret is in the log: {s}");
    }
    assert!(!text.to_ascii_lowercase().contains("authorization: bearer"));
    println!("checked {} log lines", all.len());
    emulator.shutdown().await;
}

/// A body with thousands of unreadable rows among good ones: more rows than one parsed batch
/// and more rejection events than the store holds while one PostgreSQL `COPY` is open, so the
/// rows and their events go in over several `COPY`s. Every row is stored with its outcome and
/// every unreadable row gets its own `role_sync.rejected` event, on every store.
#[tokio::test]
async fn thousands_of_unreadable_rows_each_get_their_row_and_their_event() {
    let all = Receiver::start(Answer::Status(200)).await;
    let app = app_with_hooks(
        &[Hook {
            name: "all",
            url: &all.url,
            secret: &new_secret(),
            previous: &[],
            events: &["role_sync.rejected", "job.finished"],
        }],
        FAST,
    )
    .await;
    let rows = 4500usize;
    let good: Vec<String> = (0..rows).step_by(500).map(|i| format!("V{i}")).collect();
    let seed: Vec<(&str, &[&str])> = good.iter().map(|g| (g.as_str(), &[][..])).collect();
    app.seed(&seed).await;
    let mut csv = String::from("external_id,role_template,license_tier\n");
    for i in 0..rows {
        if i % 500 == 0 {
            csv.push_str(&format!("V{i},Agent,Standard Agent\n"));
        } else {
            // No license tier: unreadable.
            csv.push_str(&format!("M{i},Agent\n"));
        }
    }
    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job["counts"]["total"], rows, "{job}");
    let bad = rows - good.len();
    assert_eq!(job["counts"]["rejected"], bad, "{job}");
    let done = app.wait_finished(&id).await;
    assert_eq!(done["counts"]["applied"], good.len(), "{done}");
    assert_eq!(done["counts"]["rejected"], bad, "{done}");
    // The cheap count first: the full check parses every body received, and polled 20 times a
    // second over thousands of bodies it took the CPU the server (same runtime) needed to
    // deliver them (this wait once timed out on a loaded PostgreSQL run).
    wait_until("the job's events", Duration::from_secs(120), || {
        all.answered() > bad
            && all.count_of("job.finished") == 1
            && all.count_of("role_sync.rejected") == bad
    })
    .await;
    let lines: BTreeSet<i64> = all
        .events()
        .into_values()
        .filter(|(t, _)| t == "role_sync.rejected")
        .map(|(_, d)| {
            assert_eq!(d["reason"]["code"], "malformed_row", "{d}");
            d["line"].as_i64().unwrap()
        })
        .collect();
    // Header is line 1; row i is line i + 2.
    let expected: BTreeSet<i64> = (0..rows)
        .filter(|i| i % 500 != 0)
        .map(|i| i as i64 + 2)
        .collect();
    assert_eq!(lines, expected);
}
