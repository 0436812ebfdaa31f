//! Replays every trace under `tests/traces/*.jsonl` (the redacted traces `rolesync
//! sandbox-check` writes) against a fresh emulator, exchange by exchange, and compares each
//! answer's status and body **shape** (keys and value types, recursively; an array by the
//! merged shape of its elements) with the recorded one. A mismatch names the file, the
//! exchange (`seq`) and the field path.
//!
//! A trace recorded in a real org becomes a regression test by being added to that folder.
//! Its placeholders are resolved against the fresh emulator (README, Replaying traces):
//! - the test user is seeded first, as the trace first read it (`GET /users/<user-1>`: its
//!   `roles` and `active`), with a fresh externalId, userName and displayName:
//!   `<user-1>`, `<external-id-1>`, `<email-1>`, `<name-1>` resolve to it;
//! - `<division-home>` is the emulator's home division; `<role-NAME>` the id of the role NAME
//!   in its catalog; `<unknown-id-1>` a random id that names nobody;
//! - versions are kept verbatim in traces: the first time a recorded `etag` is met, it is bound
//!   to the one the emulator answered at the same exchange, and a recorded `If-Match` is sent
//!   as what it was bound to.

use genesys_cloud_emulator::EmulatorArgs;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The shape of a JSON value: kinds, keys, and for arrays the merged shape of the elements.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Null,
    Bool,
    Number,
    String,
    /// `None`: an empty array (matches any array).
    Array(Option<Box<Shape>>),
    Object(BTreeMap<String, Shape>),
    /// Elements of different kinds in one array.
    Mixed(BTreeSet<&'static str>),
}

impl Shape {
    fn of(v: &Value) -> Shape {
        match v {
            Value::Null => Shape::Null,
            Value::Bool(_) => Shape::Bool,
            Value::Number(_) => Shape::Number,
            Value::String(_) => Shape::String,
            Value::Array(items) => Shape::Array(
                items
                    .iter()
                    .map(Shape::of)
                    .reduce(Shape::merge)
                    .map(Box::new),
            ),
            Value::Object(map) => {
                Shape::Object(map.iter().map(|(k, v)| (k.clone(), Shape::of(v))).collect())
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Shape::Null => "null",
            Shape::Bool => "boolean",
            Shape::Number => "number",
            Shape::String => "string",
            Shape::Array(_) => "array",
            Shape::Object(_) => "object",
            Shape::Mixed(_) => "mixed",
        }
    }

    fn merge(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Object(mut a), Shape::Object(b)) => {
                for (k, v) in b {
                    let merged = match a.remove(&k) {
                        Some(old) => old.merge(v),
                        None => v,
                    };
                    a.insert(k, merged);
                }
                Shape::Object(a)
            }
            (Shape::Array(a), Shape::Array(b)) => Shape::Array(match (a, b) {
                (Some(a), Some(b)) => Some(Box::new(a.merge(*b))),
                (a, b) => a.or(b),
            }),
            (a, b) if a.kind() == b.kind() => a,
            (a, b) => {
                let mut kinds = BTreeSet::new();
                for s in [a, b] {
                    match s {
                        Shape::Mixed(k) => kinds.extend(k),
                        s => {
                            kinds.insert(s.kind());
                        }
                    }
                }
                Shape::Mixed(kinds)
            }
        }
    }
}

/// The first difference between the recorded shape and the replayed one, with its path.
fn diff(path: &str, recorded: &Shape, replayed: &Shape) -> Option<String> {
    match (recorded, replayed) {
        (Shape::Object(a), Shape::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    None => return Some(format!("{p}: recorded, missing in the replay")),
                    Some(vb) => {
                        if let Some(d) = diff(&p, va, vb) {
                            return Some(d);
                        }
                    }
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| format!("{path}.{k}: in the replay, not recorded"))
        }
        (Shape::Array(Some(a)), Shape::Array(Some(b))) => diff(&format!("{path}[]"), a, b),
        (Shape::Array(_), Shape::Array(_)) => None,
        (a, b) if a == b => None,
        (a, b) => Some(format!(
            "{path}: recorded {}, replayed {}",
            a.kind(),
            b.kind()
        )),
    }
}

/// What the placeholders of a trace resolve to in the fresh emulator.
struct Bindings {
    values: Vec<(String, String)>,
    versions: BTreeMap<String, String>,
}

impl Bindings {
    fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (placeholder, value) in &self.values {
            out = out.replace(placeholder.as_str(), value);
        }
        out
    }

    fn json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.json(i)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.json(v))).collect())
            }
            other => other.clone(),
        }
    }
}

/// `"start/end"`: the last hour up to a minute from now, in ISO 8601.
fn last_hour() -> String {
    let now = time::OffsetDateTime::now_utc();
    let iso = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    format!(
        "{}/{}",
        iso(now - time::Duration::hours(1)),
        iso(now + time::Duration::minutes(1))
    )
}

fn traces() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

async fn replay(file: &Path) -> Vec<String> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{name}: {e}"));
    let exchanges: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: line {}: {e}", i + 1))
        })
        .collect();
    let emulator = genesys_cloud_emulator::spawn(EmulatorArgs {
        users: 30,
        rate_limit_per_minute: 0,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let base = emulator.base_url();
    let http = reqwest::Client::new();
    // The test user, as the trace first read it.
    let first_read = exchanges
        .iter()
        .find(|e| {
            e["method"] == "GET"
                && e["status"] == 200
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/users/<user-1>"))
        })
        .unwrap_or_else(|| panic!("{name}: no GET /users/<user-1> to seed the test user from"));
    let roles: Vec<Value> = first_read["body"]["roles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (external_id, email, display) = ("REPLAY-TEST-1", "replay.test@example.com", "Replay Test");
    let seeded = http
        .post(format!("{base}/emulator/users"))
        .json(
            &json!([{"userName": email, "externalId": external_id, "displayName": display,
                       "active": first_read["body"]["active"].as_bool().unwrap_or(true),
                       "roles": roles}]),
        )
        .send()
        .await
        .expect("seed");
    assert!(
        seeded.status().is_success(),
        "{name}: seeding the test user: {}",
        seeded.status()
    );
    let users: Value = http
        .get(format!("{base}/emulator/users"))
        .send()
        .await
        .expect("users")
        .json()
        .await
        .expect("users JSON");
    let user_id = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["externalId"] == external_id))
        .and_then(|u| u["id"].as_str())
        .expect("the seeded user")
        .to_owned();
    let token: Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth("rolesync-dev", Some("rolesync-dev-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let token = token["access_token"].as_str().expect("a token").to_owned();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&token).send();
    let home: Value = get("/api/v2/authorization/divisions/home")
        .await
        .expect("home")
        .json()
        .await
        .expect("home JSON");
    let catalog: Value = get("/api/v2/authorization/roles?pageSize=500")
        .await
        .expect("roles")
        .json()
        .await
        .expect("roles JSON");
    let mut values = vec![
        ("<user-1>".to_owned(), user_id),
        ("<external-id-1>".to_owned(), external_id.to_owned()),
        ("<email-1>".to_owned(), email.to_owned()),
        ("<name-1>".to_owned(), display.to_owned()),
        (
            "<unknown-id-1>".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
        (
            "<division-home>".to_owned(),
            home["id"].as_str().unwrap_or_default().to_owned(),
        ),
    ];
    for role in catalog["entities"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let (Some(id), Some(n)) = (role["id"].as_str(), role["name"].as_str()) {
            values.push((format!("<role-{n}>"), id.to_owned()));
        }
    }
    let mut b = Bindings {
        values,
        versions: BTreeMap::new(),
    };

    let mut mismatches = Vec::new();
    for e in &exchanges {
        let seq = &e["seq"];
        let method = reqwest::Method::from_bytes(e["method"].as_str().unwrap_or("GET").as_bytes())
            .expect("a method");
        let path = b.text(e["path"].as_str().unwrap_or_default());
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(v) = e["if_match"].as_str() {
            req = req.header("if-match", b.versions.get(v).map_or(v, String::as_str));
        }
        if !e["request_body"].is_null() {
            let content_type = if path.contains("/scim/") {
                "application/scim+json"
            } else {
                "application/json"
            };
            let mut body = b.json(&e["request_body"]);
            // An audit query's interval was the recording's; replayed, it is the last hour.
            if body.get("interval").is_some_and(Value::is_string) {
                body["interval"] = json!(last_hour());
            }
            req = req
                .header("content-type", content_type)
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|err| panic!("{name}: exchange {seq}: no answer: {err}"));
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let (Some(recorded), Some(replayed)) = (e["headers"]["etag"].as_str(), etag) {
            b.versions.entry(recorded.to_owned()).or_insert(replayed);
        }
        let route = e["route"].as_str().unwrap_or("?");
        if Some(u64::from(status)) != e["status"].as_u64() {
            mismatches.push(format!(
                "{name}: exchange {seq} ({} {route}): status recorded {}, replayed {status}",
                e["method"], e["status"]
            ));
            continue;
        }
        if let Some(d) = diff("body", &Shape::of(&e["body"]), &Shape::of(&body)) {
            mismatches.push(format!(
                "{name}: exchange {seq} ({} {route}): {d}",
                e["method"]
            ));
        }
    }
    emulator.shutdown().await;
    mismatches
}

#[tokio::test]
async fn every_recorded_trace_replays_with_the_same_statuses_and_shapes() {
    let files = traces();
    assert!(!files.is_empty(), "no trace under tests/traces");
    let mut mismatches = Vec::new();
    for file in &files {
        mismatches.extend(replay(file).await);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_changed_shape_is_named_by_its_path() {
    let recorded = json!({"entities": [{"id": "a", "role": {"name": "x"}}], "total": 1});
    let same = json!({"entities": [{"id": "b", "role": {"name": "y"}}, {"id": "c", "role": {"name": "z"}}], "total": 2});
    assert_eq!(diff("body", &Shape::of(&recorded), &Shape::of(&same)), None);
    let changed = json!({"entities": [{"id": "b", "role": {"name": 3}}], "total": 1});
    assert_eq!(
        diff("body", &Shape::of(&recorded), &Shape::of(&changed)).as_deref(),
        Some("body.entities[].role.name: recorded string, replayed number")
    );
    let extra = json!({"entities": [], "total": 1, "more": true});
    assert_eq!(
        diff("body", &Shape::of(&recorded), &Shape::of(&extra)).as_deref(),
        Some("body.more: in the replay, not recorded")
    );
}
