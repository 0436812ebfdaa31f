//! Logs and traces of the real `rolesync serve`: an in-process OTLP/HTTP collector receives the
//! spans of one job, the emulator and a webhook receiver see `traceparent`, and the JSON log
//! carries the access line and the job's fields through spans.

use crate::helpers::*;
use crate::process::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use genesys_cloud_emulator::EmulatorArgs;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Got {
    trace: String,
    id: String,
    parent: String,
    name: String,
    service: String,
    attrs: HashMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map_or("", String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// POST /v1/traces, protobuf: what an OpenTelemetry collector's OTLP/HTTP receiver takes.
async fn receive(State(spans): State<Spans>, body: Bytes) -> (StatusCode, HeaderMap, Vec<u8>) {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), Vec::new());
    };
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    trace: hex::encode(&s.trace_id),
                    id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    name: s.name,
                    service: service.clone(),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/x-protobuf".parse().unwrap());
    (
        StatusCode::OK,
        headers,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// Serves `router` on 127.0.0.1 until the test ends; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let url = serve(
        Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone()),
    )
    .await;
    (url, spans)
}

type Hooks = Arc<Mutex<Vec<HeaderMap>>>;

async fn hook(State(hooks): State<Hooks>, headers: HeaderMap) -> StatusCode {
    hooks.lock().unwrap().push(headers);
    StatusCode::NO_CONTENT
}

async fn hook_receiver() -> (String, Hooks) {
    let hooks: Hooks = Arc::default();
    let url = serve(
        Router::new()
            .route("/hook", post(hook))
            .with_state(hooks.clone()),
    )
    .await;
    (format!("{url}/hook"), hooks)
}

/// The service's stderr, one JSON object per line.
fn log_lines(dir: &std::path::Path, url: &str) -> Vec<Value> {
    let port = url.rsplit(':').next().unwrap();
    let text = std::fs::read_to_string(dir.join(format!("rolesync-{port}.log"))).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

async fn wait_job(url: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = api(url, reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
        if job["status"] == status {
            return job;
        }
        assert!(Instant::now() < deadline, "job not {status}: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[tokio::test]
async fn the_spans_of_a_job_reach_the_collector_linked_from_the_request_to_each_call() {
    let (otlp, spans) = collector().await;
    let (hook_url, hooks) = hook_receiver().await;
    let emu = emulator_with(EmulatorArgs {
        rate_limit_per_minute: 0,
        ..Default::default()
    })
    .await;
    let base = emu.base_url();
    let users = seed_users(&base, "TR", 25).await;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_store(dir.path()).await;
    let store = db.url.clone();
    let extra = format!(
        r#"
[log]
format = "json"
[telemetry]
otlp_endpoint = "{otlp}"
[sync]
chunk_size = 10
[[webhooks.endpoints]]
name = "audit"
url = "{hook_url}"
secret = "{SECRET}"
events = ["job.finished"]
"#
    );
    let mut svc = start_service(dir.path(), &store, &base, &extra).await;
    let client = reqwest::Client::new();

    // The caller is traced: its span is the parent of rolesync's request span.
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let resp = client
        .post(format!("{}/v1/jobs", svc.url))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/csv")
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .header("x-request-id", "trace-test-1")
        .body(csv_for(&users, "Agent", "Standard Agent"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], "trace-test-1", "echoed");
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = wait_job(&svc.url, &id, "succeeded").await;
    assert_eq!(job["counts"]["applied"], 25, "{job}");
    // Two more requests for the access log: refused, and a probe.
    let refused = client
        .get(format!("{}/v1/jobs", svc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let generated = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID when the caller sends none");
    client
        .get(format!("{}/healthz", svc.url))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A graceful stop flushes the spans still queued.
    signal(&svc.child, "-TERM");
    assert_eq!(wait_exit(&mut svc.child, 20).await, Some(0));
    let got: Vec<Got> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace == trace)
        .cloned()
        .collect();
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    let one = |name: &str| -> &Got {
        let found: Vec<&Got> = got.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one `{name}` span in {names:?}");
        found[0]
    };
    assert!(got.iter().all(|s| s.service == "rolesync"), "service.name");

    let request = one("POST /v1/jobs");
    assert_eq!(request.parent, caller_span, "child of the caller's span");
    assert_eq!(request.attr("http.route"), "/v1/jobs");
    assert_eq!(request.attr("http.response.status_code"), "202");
    assert_eq!(request.attr("request.id"), "trace-test-1");
    let ingest = one("ingest");
    assert_eq!(ingest.parent, request.id);
    assert_eq!(ingest.attr("job.id"), id);
    assert_eq!(ingest.attr("rows"), "25");
    let plan = one("plan");
    assert_eq!(plan.parent, ingest.id, "planning joins the request's trace");
    assert_eq!(plan.attr("job.id"), id);
    let validate: Vec<&Got> = got.iter().filter(|s| s.name == "validate").collect();
    assert!(!validate.is_empty() && validate.iter().all(|s| s.parent == plan.id));

    let chunks: Vec<&Got> = got.iter().filter(|s| s.name == "chunk").collect();
    assert_eq!(chunks.len(), 3, "25 users in chunks of 10: {names:?}");
    let mut numbers: Vec<&str> = chunks.iter().map(|c| c.attr("chunk")).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["0", "1", "2"]);
    for c in &chunks {
        assert_eq!(c.parent, ingest.id);
        assert_eq!(c.attr("job.id"), id);
        assert_eq!(c.attr("attempt"), "1");
    }
    let chunk_ids: Vec<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
    let planning_ids = [plan.id.as_str()];
    let scim: Vec<&Got> = got
        .iter()
        .filter(|s| s.attrs.contains_key("url.template"))
        .collect();
    let in_chunks = scim
        .iter()
        .filter(|s| chunk_ids.contains(&s.parent.as_str()))
        .count();
    assert!(
        scim.iter()
            .all(|s| chunk_ids.contains(&s.parent.as_str())
                || planning_ids.contains(&s.parent.as_str())),
        "every SCIM call is a child of a chunk or of the planning: {scim:?}"
    );
    // Each user is looked up or found in a scan, and written once.
    let patches = scim
        .iter()
        .filter(|s| s.attr("http.request.method") == "PATCH")
        .count();
    assert_eq!(patches, 25, "{names:?}");
    assert!(in_chunks >= 25);
    assert!(
        scim.iter()
            .all(|s| !s.attr("http.response.status_code").is_empty())
    );

    // The emulator saw a traceparent on every SCIM call, the last one of this trace.
    let stats: Value = client
        .get(format!("{base}/emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["traceparent"]["count"].as_u64(),
        Some(scim.len() as u64),
        "{stats}"
    );
    let last = stats["traceparent"]["last"].as_str().unwrap();
    assert!(last.starts_with(&format!("00-{trace}-")), "{last}");
    let last_parent = last.split('-').nth(2).unwrap();
    assert!(scim.iter().any(|s| s.id == last_parent), "{last}");

    // The webhook: a span under the chunk that finished the job, its id in the header sent.
    let delivery = one("POST webhook job.finished");
    assert!(
        chunk_ids.contains(&delivery.parent.as_str()),
        "{delivery:?}"
    );
    assert_eq!(delivery.attr("webhook.type"), "job.finished");
    assert_eq!(delivery.attr("http.response.status_code"), "204");
    let sent = hooks.lock().unwrap()[0]["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(sent, format!("00-{trace}-{}-01", delivery.id));

    // The log: JSON lines, the access line of each request, and the job's id (with the chunk
    // and attempt inside a chunk) on the lines logged inside the job's spans.
    let lines = log_lines(dir.path(), &svc.url);
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "rolesync::http::access")
        .collect();
    let submit = access
        .iter()
        .find(|l| l["request.id"] == "trace-test-1")
        .expect("an access line for the submission");
    assert_eq!(submit["level"], "INFO");
    assert_eq!(submit["http.request.method"], "POST");
    assert_eq!(submit["http.route"], "/v1/jobs");
    assert_eq!(submit["http.response.status_code"], 202);
    assert!(submit["duration_ms"].is_u64(), "{submit}");
    let unauthorised = access
        .iter()
        .find(|l| l["request.id"] == generated.as_str())
        .expect("an access line for the 401");
    assert_eq!(unauthorised["level"], "WARN");
    assert_eq!(unauthorised["http.response.status_code"], 401);
    assert!(
        access.iter().all(
            |l| l["http.route"] != "/healthz" && l["http.route"] != "/readyz"
                || l["level"] != "INFO"
        ),
        "probes are not logged at info"
    );
    let line = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["job.id"] == id.as_str())
            .unwrap_or_else(|| panic!("no `{message}` line with job.id"))
    };
    assert_eq!(line("job accepted")["request.id"], "trace-test-1");
    line("job planned");
    let finished = line("job finished");
    assert!(
        finished["chunk"].is_i64() && finished["attempt"] == 1,
        "{finished}"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_holds_up_neither_the_job_nor_the_shutdown() {
    // Accepts connections and never answers: the slowest way for a collector to be down.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", blackhole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            held.push(socket);
        }
    });
    let emu = emulator_with(EmulatorArgs {
        rate_limit_per_minute: 0,
        ..Default::default()
    })
    .await;
    let base = emu.base_url();
    let users = seed_users(&base, "BH", 25).await;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_store(dir.path()).await;
    let store = db.url.clone();
    let extra = format!(
        "[log]\nformat = \"json\"\n[telemetry]\notlp_endpoint = \"{otlp}\"\nexport_timeout_secs = 1\n"
    );
    let mut svc = start_service(dir.path(), &store, &base, &extra).await;
    let job = api(
        &svc.url,
        reqwest::Method::POST,
        "/v1/jobs",
        Some(("text/csv", csv_for(&users, "Agent", "Standard Agent"))),
    )
    .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    wait_job(&svc.url, &id, "succeeded").await;
    // Let an export time out, so spans are queued behind a dead collector at the stop.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stopping = Instant::now();
    signal(&svc.child, "-TERM");
    assert_eq!(wait_exit(&mut svc.child, 20).await, Some(0));
    // Nothing in flight: the stop waits for no chunk, and the flush for at most about the
    // export bound.
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    let lines = log_lines(dir.path(), &svc.url);
    let unreachable = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("traces: the collector cannot be reached"))
        })
        .count();
    assert_eq!(unreachable, 1, "said once, not per export");
}
