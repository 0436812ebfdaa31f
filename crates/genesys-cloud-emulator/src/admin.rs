//! `/emulator/*`: the emulator's own admin endpoints (no auth, no faults, no rate limit, not
//! counted in the stats), and the request statistics.
//!
//! - `POST /emulator/users`: bulk-add users (a JSON array of SCIM users) → `{"created": n}`.
//!   Several users may share an `externalId` (to stage `ambiguous_user`); userNames stay unique.
//! - `GET /emulator/users`: every user, `[{id, userName, externalId, displayName, active, roles,
//!   version}]`.
//! - `GET|POST /emulator/faults`: the fault knobs (see `faults.rs`) and the faults staged for
//!   particular calls (see `staged.rs`).
//! - `GET /emulator/stats`, `POST /emulator/stats/reset`.
//! - `GET /emulator/writes?after&limit`: the log of accepted role writes (`writes.rs`).
//! - `GET|POST /emulator/audits`: the audit trail's knobs (`audit_api.rs`).
//! - `POST /emulator/tokens`: a token acting for a person (`oauth.rs`).
//! - `POST /emulator/reset`: users, the write log, stats and tokens cleared; faults off,
//!   nothing staged.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::Shared;
use crate::errors::{self, ApiError, JSON_CONTENT_TYPE, json_response};
use crate::faults::{Dropped, FaultSettings, FaultUpdate};
use crate::ratelimit;
use crate::scim::{read_body, read_json};
use crate::staged::{FailingUser, FailingUsers, OverrideView};
use crate::state::lock;
use crate::user::{self, UserData};

/// Largest `POST /emulator/users` body.
const MAX_ADMIN_BODY: usize = 512 * 1024 * 1024;
/// Largest `POST /emulator/faults` body: room for `MAX_FAILING_USERS` entries.
const MAX_FAULTS_BODY: usize = 4 * 1024 * 1024;
const STAT_SHARDS: usize = 16;

/// Per route pattern: (method, status, count).
type StatShard = Mutex<HashMap<String, Vec<(Method, u16, u64)>>>;

/// Request counts by (method, route pattern, status), sharded per thread; and the W3C trace
/// context the counted requests carried.
pub struct Stats {
    shards: Box<[StatShard]>,
    /// Counted requests with a well-formed `traceparent`.
    traced: AtomicU64,
    /// The last well-formed `traceparent` seen.
    last_traceparent: Mutex<Option<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            shards: (0..STAT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            traced: AtomicU64::new(0),
            last_traceparent: Mutex::new(None),
        }
    }
}

/// `version-traceid-parentid-flags` as W3C Trace Context writes it: `00`, 32 and 16 lowercase
/// hex digits, neither all zeros, and two hex digits of flags.
fn well_formed_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STAT_SHARDS);
        }
        s.get()
    })
}

impl Stats {
    pub fn record(&self, method: &Method, route: &str, status: u16) {
        let mut shard = lock(&self.shards[thread_shard()]);
        let rows = match shard.get_mut(route) {
            Some(rows) => rows,
            None => shard.entry(route.to_string()).or_default(),
        };
        match rows
            .iter_mut()
            .find(|(m, s, _)| m == method && *s == status)
        {
            Some(row) => row.2 += 1,
            None => rows.push((method.clone(), status, 1)),
        }
    }

    /// Counts a request's `traceparent` if it has a well-formed one.
    pub fn record_traceparent(&self, value: Option<&HeaderValue>) {
        let Some(v) = value.and_then(|v| v.to_str().ok()) else {
            return;
        };
        if well_formed_traceparent(v) {
            self.traced.fetch_add(1, Ordering::Relaxed);
            *lock(&self.last_traceparent) = Some(v.to_owned());
        }
    }

    pub fn reset(&self) {
        for s in self.shards.iter() {
            lock(s).clear();
        }
        self.traced.store(0, Ordering::Relaxed);
        *lock(&self.last_traceparent) = None;
    }

    pub fn snapshot(&self) -> Value {
        let mut merged: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
        for s in self.shards.iter() {
            for (route, rows) in lock(s).iter() {
                for (m, status, n) in rows {
                    *merged
                        .entry((route.clone(), m.to_string(), *status))
                        .or_default() += n;
                }
            }
        }
        let total: u64 = merged.values().sum();
        let requests: Vec<Value> = merged
            .into_iter()
            .map(|((route, method, status), count)| {
                json!({"method": method, "route": route, "status": status, "count": count})
            })
            .collect();
        let traceparent = json!({
            "count": self.traced.load(Ordering::Relaxed),
            "last": *lock(&self.last_traceparent),
        });
        json!({"total": total, "requests": requests, "traceparent": traceparent})
    }
}

/// The only middleware: gives every response an `inin-correlation-id` (also the `contextId` of
/// error bodies), sends API calls through `ratelimit::guard`, and counts every request but
/// `/emulator/*` by its route pattern. A dropped
/// connection counts with status 0; a path no route matches as `(unmatched)`.
pub async fn observe(State(shared): State<Shared>, req: Request, next: Next) -> Response {
    let id = errors::random_uuid();
    let method = req.method().clone();
    let traceparent = req.headers().get("traceparent").cloned();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let counted = match &route {
        Some(r) => !r.as_str().starts_with("/emulator/"),
        None => !req.uri().path().starts_with("/emulator/"),
    };
    // API calls (SCIM, Platform API) go through the guard: token, rate limit, faults.
    let api = route
        .as_ref()
        .is_some_and(|r| r.as_str().starts_with("/api/"));
    let inner = async {
        if api {
            ratelimit::guard(&shared, req, next).await
        } else {
            next.run(req).await
        }
    };
    let mut response = errors::CORRELATION_ID.scope(id, inner).await;
    if counted {
        let status = if response.extensions().get::<Dropped>().is_some() {
            0
        } else {
            response.status().as_u16()
        };
        let route = route.as_ref().map_or("(unmatched)", MatchedPath::as_str);
        shared.stats.record(&method, route, status);
        shared.stats.record_traceparent(traceparent.as_ref());
    }
    if let Some(v) = errors::uuid_header(&id) {
        response.headers_mut().insert(errors::CORRELATION_HEADER, v);
    }
    response
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/users", get(list_users).post(add_users))
        .route("/faults", get(get_faults).post(set_faults))
        .route("/stats", get(get_stats))
        .route("/stats/reset", post(reset_stats))
        .route("/reset", post(reset))
        .route("/writes", get(crate::writes::get_writes))
        .route("/tokens", post(crate::oauth::person_token))
        .route(
            "/audits",
            get(crate::audit_api::get_admin).post(crate::audit_api::set_admin),
        )
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, JSON_CONTENT_TYPE, body)
}

async fn add_users(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    match add_users_inner(&shared, &headers, body).await {
        Ok(n) => ok(&json!({"created": n})),
        Err(e) => e.into_response(),
    }
}

async fn add_users_inner(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, ApiError> {
    let Value::Array(items) = read_json(headers, body, MAX_ADMIN_BODY).await? else {
        return Err(ApiError::invalid_syntax(
            "The body must be a JSON array of SCIM users.",
        ));
    };
    // Validate everything first so a bad row adds nothing.
    let mut batch: Vec<UserData> = Vec::with_capacity(items.len());
    let mut names = std::collections::HashSet::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(doc) = item else {
            return Err(ApiError::invalid_syntax(format!(
                "User #{} is not an object.",
                i + 1
            )));
        };
        let mut data = user::from_json(&doc, &shared.catalog)
            .map_err(|e| prefix_error(e, &format!("User #{}: ", i + 1)))?;
        if data.display_name.is_none() {
            data.display_name = Some(data.user_name.clone());
        }
        let key = data.user_name.to_lowercase();
        if !names.insert(key) || shared.users.id_by_user_name(&data.user_name).is_some() {
            return Err(ApiError::uniqueness(format!(
                "User #{}: userName '{}' is already in use.",
                i + 1,
                data.user_name
            )));
        }
        batch.push(data);
    }
    let n = batch.len();
    for data in batch {
        shared.users.create(data, None)?;
    }
    Ok(n)
}

fn prefix_error(e: ApiError, prefix: &str) -> ApiError {
    match e {
        ApiError::Scim {
            status,
            scim_type,
            detail,
        } => ApiError::Scim {
            status,
            scim_type,
            detail: format!("{prefix}{detail}"),
        },
        other => other,
    }
}

async fn list_users(State(shared): State<Shared>) -> Response {
    let users: Vec<Value> = shared
        .users
        .dump()
        .into_iter()
        .map(|u| {
            json!({
                "id": &*u.id,
                "userName": u.data.user_name,
                "externalId": u.data.external_id,
                "displayName": u.data.display_name,
                "active": u.data.active,
                "roles": u.data.roles,
                "version": u.version,
            })
        })
        .collect();
    ok(&Value::Array(users))
}

/// `GET /emulator/faults`: the knobs, then what is staged.
#[derive(Serialize)]
struct FaultsView<'a> {
    #[serde(flatten)]
    settings: FaultSettings,
    outage_remaining_secs: f64,
    seed: Option<u64>,
    forbid: bool,
    omit_versions: bool,
    missing_permissions: Vec<String>,
    delete_before_bulk_write: Vec<String>,
    failing_users: &'a [FailingUser],
    override_headers: Option<OverrideView>,
    token_expires_in: Option<Box<RawValue>>,
}

fn faults_body(shared: &Shared) -> Response {
    let f = &shared.faults;
    let failing: Arc<FailingUsers> = f.staged().failing_users();
    let view = FaultsView {
        settings: f.settings(),
        outage_remaining_secs: f.outage_remaining().map_or(0.0, |d| d.as_secs_f64()),
        seed: f.seed(),
        forbid: f.forbid(),
        omit_versions: f.omit_versions(),
        missing_permissions: f.missing_permissions(),
        delete_before_bulk_write: f.delete_before_bulk_write(),
        failing_users: failing.entries(),
        override_headers: f.staged().override_view(),
        token_expires_in: f.staged().expires_in(),
    };
    let mut response = (
        StatusCode::OK,
        serde_json::to_vec(&view).unwrap_or_default(),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

async fn get_faults(State(shared): State<Shared>) -> Response {
    faults_body(&shared)
}

async fn set_faults(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        // Parsed from the bytes, not through `Value`, so that `token_expires_in` keeps the
        // number as written.
        let bytes = read_body(&headers, body, MAX_FAULTS_BODY).await?;
        let update: FaultUpdate = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid_value(format!("Invalid fault settings: {e}")))?;
        shared
            .faults
            .update(update)
            .map_err(ApiError::invalid_value)?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => faults_body(&shared),
        Err(e) => e.into_response(),
    }
}

async fn get_stats(State(shared): State<Shared>) -> Response {
    ok(&shared.stats.snapshot())
}

async fn reset_stats(State(shared): State<Shared>) -> Response {
    shared.stats.reset();
    ok(&shared.stats.snapshot())
}

async fn reset(State(shared): State<Shared>) -> Response {
    shared.users.clear();
    shared.writes.clear();
    shared.stats.reset();
    shared.tokens.clear();
    shared.faults.reset();
    shared.audits.reset();
    ok(&json!({"reset": true}))
}
