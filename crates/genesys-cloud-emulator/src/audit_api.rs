//! The audit query API (README, Audit trail) over the org's trail (`audit_trail.rs`):
//!
//! - `POST /api/v2/audits/query/realtime`: `AuditRealtimeQueryRequest` → `{entities, pageSize,
//!   pageNumber, total, pageCount}`; the interval must lie within the last 14 days.
//! - `POST /api/v2/audits/query`: `AuditQueryRequest` → `AuditQueryExecutionStatusResponse`
//!   (`id`, `state`, …); `GET /api/v2/audits/query/{transactionId}` its state;
//!   `GET …/{transactionId}/results?cursor&pageSize` → `{id, pageSize, cursor, entities}`.
//! - `GET /api/v2/audits/query/servicemapping` and `…/realtime/servicemapping`.
//! - Admin: `GET|POST /emulator/audits` (the trail's size, `backdate_secs`, `fail_queries`,
//!   `query_polls`).
//!
//! Every API endpoint needs `audits:audit:view`; they are rate limited, faulted and counted
//! like every API call (they live under `/api/`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::audit_trail::{self, Message, Property, Query, Shape, iso, now_ms, parse_iso};
use crate::errors::{ApiError, JSON_CONTENT_TYPE, json_response};
use crate::permissions::{AUDIT_VIEW, require};
use crate::scim::read_json;

/// The realtime query's reach (AuditApi: "only retrieve 14 days worth of audits").
pub const REALTIME_DAYS: i64 = 14;
/// Retention (Resource Center: "at least one year"): the async query reaches this far back.
const RETENTION_DAYS: i64 = 365;
const DAY_MS: i64 = 86_400_000;
/// Page sizes: default 25, at most 500 (AuditApi: `pageSize`).
const DEFAULT_PAGE: usize = 25;
const MAX_PAGE: usize = 500;
/// Most filters and sorts in one request.
const MAX_FILTERS: usize = 20;
/// Most async query executions kept; the oldest are forgotten first.
const MAX_EXECUTIONS: usize = 1_000;
/// Largest query body.
const MAX_BODY: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The state of an async query execution (`AuditQueryExecutionStatusResponse.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl ExecState {
    fn as_str(self) -> &'static str {
        match self {
            ExecState::Queued => "Queued",
            ExecState::Running => "Running",
            ExecState::Succeeded => "Succeeded",
            ExecState::Failed => "Failed",
        }
    }
}

struct Execution {
    request: Value,
    start_ms: i64,
    /// Status reads left before it ends (`query_polls`).
    polls_left: u32,
    /// It ends `Failed` (`fail_queries` when it was made).
    fails: bool,
    results: Vec<Arc<Message>>,
}

impl Execution {
    fn state(&self) -> ExecState {
        match (self.polls_left, self.fails) {
            (0, true) => ExecState::Failed,
            (0, false) => ExecState::Succeeded,
            (1, _) => ExecState::Running,
            _ => ExecState::Queued,
        }
    }
}

/// Async query executions, and the admin knobs of the audit API.
#[derive(Default)]
pub struct Audits {
    executions: Mutex<(Vec<String>, HashMap<String, Execution>)>,
    /// New executions end `Failed`.
    fail_queries: AtomicBool,
    /// Status reads an execution answers before it ends (0: ended at once).
    query_polls: AtomicU32,
    /// What messages are written as, and their delay (`entity_type`, `add_action`,
    /// `remove_action`, `delay_ms`).
    shape: Mutex<Shape>,
}

impl Audits {
    pub fn reset(&self) {
        *lock(&self.executions) = (Vec::new(), HashMap::new());
        self.fail_queries.store(false, Ordering::Relaxed);
        self.query_polls.store(0, Ordering::Relaxed);
        *lock(&self.shape) = Shape::default();
    }

    fn shape(&self) -> Shape {
        lock(&self.shape).clone()
    }
}

/// Longest name `POST /emulator/audits` takes for an entity type or an action.
const MAX_NAME: usize = 64;
/// Longest `delay_ms`: ten minutes.
const MAX_DELAY_MS: i64 = 600_000;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::genesys(StatusCode::BAD_REQUEST, "bad.request", message)
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, JSON_CONTENT_TYPE, body)
}

/// `interval` "start/end" (ISO 8601, start before end) as milliseconds.
fn interval(body: &Value) -> Result<(i64, i64), ApiError> {
    let Some(text) = body.get("interval").and_then(Value::as_str) else {
        return Err(bad("interval is required: \"start/end\" in ISO-8601"));
    };
    let (a, b) = text
        .split_once('/')
        .ok_or_else(|| bad("interval must be \"start/end\" in ISO-8601"))?;
    let (Some(start), Some(end)) = (parse_iso(a), parse_iso(b)) else {
        return Err(bad("interval must be \"start/end\" in ISO-8601 date-times"));
    };
    if start >= end {
        return Err(bad("interval: the start must be before the end"));
    }
    Ok((start, end))
}

/// The checked query of a request body (`realtime`: the interval within the last 14 days).
fn parse_query(body: &Value, realtime: bool) -> Result<Query, ApiError> {
    if !body.is_object() {
        return Err(bad("The body must be a JSON object"));
    }
    let (start_ms, end_ms) = interval(body)?;
    let reach = if realtime {
        REALTIME_DAYS
    } else {
        RETENTION_DAYS
    };
    if start_ms < now_ms() - reach * DAY_MS {
        return Err(bad(format!(
            "interval: the start is more than {reach} days ago{}",
            if realtime {
                "; use /api/v2/audits/query for older audits"
            } else {
                ""
            }
        )));
    }
    let service = match body.get("serviceName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("serviceName must be a string")),
    };
    let mut filters = Vec::new();
    let list = |name: &str| -> Result<Vec<Value>, ApiError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) if a.len() <= MAX_FILTERS => Ok(a.clone()),
            Some(_) => Err(bad(format!(
                "{name} must be an array of at most {MAX_FILTERS}"
            ))),
        }
    };
    for f in list("filters")? {
        let property = f.get("property").and_then(Value::as_str).unwrap_or("");
        let Some(p) = Property::parse(property) else {
            return Err(bad(format!(
                "filters: property '{property}' must be one of UserId, TrusteeOrganizationId, ClientId, Action, EntityType, EntityId"
            )));
        };
        let Some(value) = f.get("value").and_then(Value::as_str) else {
            return Err(bad("filters: value must be a string"));
        };
        filters.push((p, value.to_owned()));
    }
    let mut descending = true;
    for s in list("sort")? {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.eq_ignore_ascii_case("Timestamp") {
            return Err(bad(format!("sort: name '{name}' must be Timestamp")));
        }
        descending = match s.get("sortOrder").and_then(Value::as_str) {
            None => true,
            Some(o) if o.eq_ignore_ascii_case("ascending") => false,
            Some(o) if o.eq_ignore_ascii_case("descending") => true,
            Some(o) => {
                return Err(bad(format!(
                    "sort: sortOrder '{o}' must be ascending or descending"
                )));
            }
        };
    }
    Ok(Query {
        start_ms,
        end_ms,
        service,
        filters,
        descending,
    })
}

/// A page size from a JSON number or a query string: 1..=500.
fn page_size(v: Option<u64>) -> Result<usize, ApiError> {
    match v {
        None => Ok(DEFAULT_PAGE),
        Some(n @ 1..=500) => Ok(n as usize),
        Some(n) => Err(bad(format!("pageSize {n} must be from 1 to {MAX_PAGE}"))),
    }
}

fn json_u64(body: &Value, name: &str) -> Result<Option<u64>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("{name} must be a positive integer"))),
    }
}

fn selected(shared: &Shared, q: &Query) -> Vec<Arc<Message>> {
    let role_id = |name: &str| {
        shared
            .catalog
            .id_of_name(name)
            .unwrap_or_default()
            .to_owned()
    };
    let shape = shared.audits.shape();
    audit_trail::select(
        &shared.writes.trail.snapshot(),
        q,
        &role_id,
        &shape,
        now_ms(),
    )
}

fn views(shared: &Shared, messages: &[Arc<Message>]) -> Vec<Value> {
    let shape = shared.audits.shape();
    messages
        .iter()
        .map(|m| {
            let role_id = shared.catalog.id_of_name(&m.role_name).unwrap_or_default();
            audit_trail::view(
                m,
                role_id,
                &shared.home_division.id,
                &shared.home_division.id,
                &shape,
            )
        })
        .collect()
}

/// `POST /api/v2/audits/query/realtime`.
pub(crate) async fn realtime(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        require(&shared, AUDIT_VIEW)?;
        let body = read_json(&headers, body, MAX_BODY).await?;
        let q = parse_query(&body, true)?;
        let size = page_size(json_u64(&body, "pageSize")?)?;
        let number = match json_u64(&body, "pageNumber")? {
            None => 1,
            Some(0) => return Err(bad("pageNumber must be at least 1")),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let all = selected(&shared, &q);
        let total = all.len();
        let page: Vec<Arc<Message>> = all
            .into_iter()
            .skip((number - 1).saturating_mul(size))
            .take(size)
            .collect();
        Ok::<_, ApiError>(json!({
            "entities": views(&shared, &page),
            "pageSize": size,
            "pageNumber": number,
            "total": total,
            "pageCount": total.div_ceil(size),
        }))
    }
    .await;
    match result {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

fn status_view(id: &str, e: &Execution) -> Value {
    let mut v = json!({
        "id": id,
        "state": e.state().as_str(),
        "startDate": iso(e.start_ms),
    });
    for key in ["interval", "serviceName", "filters", "sort"] {
        if let Some(x) = e.request.get(key) {
            v[key] = x.clone();
        }
    }
    v
}

/// `POST /api/v2/audits/query`: the execution, `Queued` (or ended when `query_polls` is 0).
pub(crate) async fn create_query(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        require(&shared, AUDIT_VIEW)?;
        let body = read_json(&headers, body, MAX_BODY).await?;
        let q = parse_query(&body, false)?;
        let results = selected(&shared, &q);
        let id = crate::errors::new_uuid();
        let exec = Execution {
            request: body,
            start_ms: now_ms(),
            polls_left: shared.audits.query_polls.load(Ordering::Relaxed),
            fails: shared.audits.fail_queries.load(Ordering::Relaxed),
            results,
        };
        let view = status_view(&id, &exec);
        let mut guard = lock(&shared.audits.executions);
        let (order, map) = &mut *guard;
        if order.len() >= MAX_EXECUTIONS {
            let old = order.remove(0);
            map.remove(&old);
        }
        order.push(id.clone());
        map.insert(id, exec);
        Ok::<_, ApiError>(view)
    }
    .await;
    match result {
        Ok(v) => json_response(StatusCode::ACCEPTED, JSON_CONTENT_TYPE, &v),
        Err(e) => e.into_response(),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::genesys(
        StatusCode::NOT_FOUND,
        "not.found",
        format!("The audit query {id} was not found"),
    )
}

/// `GET /api/v2/audits/query/{transactionId}`: each read takes the execution one step on.
pub(crate) async fn query_status(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let result = (|| {
        require(&shared, AUDIT_VIEW)?;
        let mut guard = lock(&shared.audits.executions);
        let exec = guard.1.get_mut(&id).ok_or_else(|| not_found(&id))?;
        let view = status_view(&id, exec);
        exec.polls_left = exec.polls_left.saturating_sub(1);
        Ok::<_, ApiError>(view)
    })();
    match result {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v2/audits/query/{transactionId}/results?cursor&pageSize`: oldest first by the
/// request's sort; `cursor` (opaque, here the offset) is absent on the last page.
pub(crate) async fn query_results(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    query: Result<QueryParams<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let result = (|| {
        require(&shared, AUDIT_VIEW)?;
        let params = query.map_err(|e| bad(format!("Invalid query: {e}")))?.0;
        let mut size = None;
        let mut offset = 0usize;
        for (k, v) in &params {
            match k.as_str() {
                "pageSize" => {
                    size =
                        Some(v.parse::<u64>().map_err(|_| {
                            bad(format!("pageSize '{v}' must be from 1 to {MAX_PAGE}"))
                        })?)
                }
                "cursor" => {
                    offset = v
                        .strip_prefix('c')
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| {
                            bad(format!("cursor '{v}' is not a cursor this query gave"))
                        })?
                }
                _ => {}
            }
        }
        let size = page_size(size)?;
        let guard = lock(&shared.audits.executions);
        let exec = guard.1.get(&id).ok_or_else(|| not_found(&id))?;
        if exec.state() != ExecState::Succeeded {
            return Err(bad(format!(
                "The audit query {id} is {}: results exist once it has Succeeded",
                exec.state().as_str()
            )));
        }
        let page: Vec<Arc<Message>> = exec
            .results
            .iter()
            .skip(offset)
            .take(size)
            .cloned()
            .collect();
        let next = offset.saturating_add(size);
        let mut v = json!({"id": id, "pageSize": size, "entities": views(&shared, &page)});
        if next < exec.results.len() {
            v["cursor"] = json!(format!("c{next}"));
        }
        Ok::<_, ApiError>(v)
    })();
    match result {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v2/audits/query[/realtime]/servicemapping`.
pub(crate) async fn service_mapping(State(shared): State<Shared>) -> Response {
    let shape = shared.audits.shape();
    match require(&shared, AUDIT_VIEW) {
        Ok(()) => ok(&json!({"services": [{
            "name": audit_trail::SERVICE,
            "entities": [{"name": shape.entity_type, "actions": [shape.add_action, shape.remove_action]}],
        }]})),
        Err(e) => e.into_response(),
    }
}

fn admin_view(shared: &Shared) -> Value {
    let shape = shared.audits.shape();
    json!({
        "messages": shared.writes.trail.len(),
        "fail_queries": shared.audits.fail_queries.load(Ordering::Relaxed),
        "query_polls": shared.audits.query_polls.load(Ordering::Relaxed),
        "entity_type": shape.entity_type,
        "add_action": shape.add_action,
        "remove_action": shape.remove_action,
        "delay_ms": shape.delay_ms,
    })
}

/// A name for `entity_type` or an action: 1 to 64 of `[A-Za-z0-9_.-]`.
fn shape_name(field: &str, v: &Value) -> Result<String, ApiError> {
    v.as_str()
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_NAME
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            bad(format!(
                "{field} must be 1 to {MAX_NAME} of A-Z a-z 0-9 _ . -"
            ))
        })
}

/// `GET /emulator/audits`.
pub(crate) async fn get_admin(State(shared): State<Shared>) -> Response {
    ok(&admin_view(&shared))
}

/// `POST /emulator/audits` `{"backdate_secs": N, "fail_queries": bool, "query_polls": N,
/// "entity_type", "add_action", "remove_action", "delay_ms"}`: moves every message kept N
/// seconds (0..=400 days) into the past; makes new async queries end `Failed`; sets how many
/// status reads a new async query answers before it ends; changes what role changes are
/// written as and how long after its date a message is queryable (every message, kept or
/// new). Nothing changes unless every field is valid.
pub(crate) async fn set_admin(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = read_json(&headers, body, MAX_BODY).await?;
        let Some(obj) = body.as_object() else {
            return Err(bad("The body must be a JSON object"));
        };
        let mut backdate = None;
        let mut fail = None;
        let mut polls = None;
        let mut shape = shared.audits.shape();
        for (k, v) in obj {
            match k.as_str() {
                "entity_type" => shape.entity_type = shape_name(k, v)?,
                "add_action" => shape.add_action = shape_name(k, v)?,
                "remove_action" => shape.remove_action = shape_name(k, v)?,
                "delay_ms" => {
                    shape.delay_ms = v
                        .as_i64()
                        .filter(|n| (0..=MAX_DELAY_MS).contains(n))
                        .ok_or_else(|| bad("delay_ms must be an integer from 0 to 600000"))?
                }
                "backdate_secs" => backdate = Some(
                    v.as_i64()
                        .filter(|n| (0..=400 * 86_400).contains(n))
                        .ok_or_else(|| {
                            bad("backdate_secs must be an integer from 0 to 34560000 (400 days)")
                        })?,
                ),
                "fail_queries" => {
                    fail = Some(
                        v.as_bool()
                            .ok_or_else(|| bad("fail_queries must be a boolean"))?,
                    )
                }
                "query_polls" => {
                    polls = Some(
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| *n <= 100)
                            .ok_or_else(|| bad("query_polls must be an integer from 0 to 100"))?,
                    )
                }
                other => return Err(bad(format!("unknown field '{other}'"))),
            }
        }
        if let Some(secs) = backdate {
            shared.writes.trail.backdate(secs);
        }
        if let Some(f) = fail {
            shared.audits.fail_queries.store(f, Ordering::Relaxed);
        }
        if let Some(p) = polls {
            shared.audits.query_polls.store(p, Ordering::Relaxed);
        }
        *lock(&shared.audits.shape) = shape;
        Ok::<_, ApiError>(admin_view(&shared))
    }
    .await;
    match result {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn iv(start: i64, end: i64) -> Value {
        json!({"interval": format!("{}/{}", iso(start), iso(end))})
    }

    #[test]
    fn the_interval_is_required_ordered_and_within_reach() {
        let now = now_ms();
        assert!(parse_query(&json!({}), true).is_err());
        assert!(parse_query(&json!({"interval": "x/y"}), true).is_err());
        assert!(parse_query(&iv(now, now - 1), true).is_err());
        assert!(parse_query(&iv(now - 15 * DAY_MS, now), true).is_err());
        assert!(parse_query(&iv(now - 15 * DAY_MS, now), false).is_ok());
        assert!(parse_query(&iv(now - 400 * DAY_MS, now), false).is_err());
        let q = parse_query(&iv(now - DAY_MS, now), true).unwrap();
        assert!(q.descending);
    }

    #[test]
    fn filters_and_sort_are_checked() {
        let now = now_ms();
        let mut body = iv(now - 1000, now);
        body["filters"] = json!([{"property": "ClientId", "value": "c"}]);
        body["sort"] = json!([{"name": "Timestamp", "sortOrder": "ascending"}]);
        let q = parse_query(&body, true).unwrap();
        assert_eq!(q.filters, vec![(Property::ClientId, "c".to_owned())]);
        assert!(!q.descending);
        body["filters"] = json!([{"property": "Colour", "value": "c"}]);
        assert!(parse_query(&body, true).is_err());
        body["filters"] = json!([{"property": "ClientId", "value": 3}]);
        assert!(parse_query(&body, true).is_err());
        body["filters"] = Value::Null;
        body["sort"] = json!([{"name": "Timestamp", "sortOrder": "sideways"}]);
        assert!(parse_query(&body, true).is_err());
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(501)).is_err());
        assert_eq!(page_size(Some(500)).unwrap(), 500);
    }
}
