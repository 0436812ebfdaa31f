//! The log of accepted role writes (README, Admin endpoints: `GET /emulator/writes`), for tests
//! that audit what a client changed.
//!
//! Every accepted API request that changes a user's role set appends one entry per user whose
//! roles changed: SCIM `POST` (a create: roles before `[]`), `PUT` and `PATCH` of a user, and
//! the Authorization API's bulk grant and `users/remove`. A request that changes no roles (a
//! no-op, a refusal, a stale `If-Match`, a fault) logs nothing; neither do the admin endpoints
//! nor the seeded users.
//!
//! The entry is built by the caller while it holds the user's shard write lock (`state.rs`),
//! and pushed under this log's mutex before that lock is released, so two writes to the same
//! user are logged in the order they took effect. The push is one short critical section: the
//! entry is allocated before the mutex is taken, and its `seq` is implied by its position
//! (the entries are contiguous: `seq` of the newest is `last_seq`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::Shared;
use crate::audit_trail::Actor;
use crate::errors::{ApiError, JSON_CONTENT_TYPE};
/// A user's id, as the directory keeps it (`state::Id`; named here, not imported, so that the
/// directory can depend on this log without a cycle).
type Id = std::sync::Arc<str>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most entries kept; the oldest are dropped first.
pub const MAX_ENTRIES: usize = 2_000_000;
/// `limit` when the query has none, and its largest value.
const DEFAULT_LIMIT: usize = 10_000;
const MAX_LIMIT: usize = 100_000;
/// Longest `x-correlation-id` kept.
const MAX_CORRELATION_ID: usize = 200;

/// Which call made the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    ScimPatch,
    ScimPut,
    ScimPost,
    BulkGrant,
    BulkRemove,
}

impl Via {
    /// The snake-case name, as `GET /emulator/writes` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::ScimPatch => "scim_patch",
            Via::ScimPut => "scim_put",
            Via::ScimPost => "scim_post",
            Via::BulkGrant => "bulk_grant",
            Via::BulkRemove => "bulk_remove",
        }
    }
}

/// The OAuth client of the request's token (and the person a person's token acts for); the
/// API guard (`ratelimit.rs`) puts it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

/// Who made a request: its token's client (and person) and its `x-correlation-id` (when at most
/// 200 bytes of visible ASCII). Never fails: outside the guard the client is empty.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    actor: Actor,
    correlation_id: Option<Arc<str>>,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let actor = parts
            .extensions
            .get::<Caller>()
            .map_or_else(|| Actor::client(Arc::from("")), |c| c.0.clone());
        let correlation_id = parts
            .headers
            .get("x-correlation-id")
            .and_then(correlation_id);
        Ok(WriteCtx {
            actor,
            correlation_id,
        })
    }
}

/// The header's value when it is 1 to 200 bytes of visible ASCII (0x21–0x7E).
fn correlation_id(v: &HeaderValue) -> Option<Arc<str>> {
    let b = v.as_bytes();
    let ok = !b.is_empty() && b.len() <= MAX_CORRELATION_ID && b.iter().all(u8::is_ascii_graphic);
    // All ASCII, so `to_str` cannot fail here.
    ok.then(|| v.to_str().ok().map(Arc::from)).flatten()
}

/// A role write being applied: where to log it, by whom, through which call.
pub struct Audit<'a> {
    pub log: &'a WriteLog,
    pub ctx: &'a WriteCtx,
    pub via: Via,
}

impl Audit<'_> {
    /// Logs the change of `user_id`'s roles from `before` to `after`, if they differ. Called
    /// with the user's shard lock held, after the last check that could refuse the write.
    pub fn record(
        &self,
        user_id: &Id,
        external_id: Option<&str>,
        before: &BTreeSet<String>,
        after: &BTreeSet<String>,
    ) {
        if before == after {
            return;
        }
        // The org's audit trail too (README, Audit trail): one message per role changed.
        self.log
            .trail
            .record(&self.ctx.actor, self.via.as_str(), user_id, before, after);
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // BTreeSet iterates in name order: the lists come out sorted.
        let entry = Arc::new(Write {
            at_ms,
            client_id: self.ctx.actor.client_id.clone(),
            via: self.via,
            user_id: user_id.clone(),
            external_id: external_id.map(str::to_owned),
            roles_before: before.iter().cloned().collect(),
            roles_after: after.iter().cloned().collect(),
            correlation_id: self.ctx.correlation_id.clone(),
        });
        self.log.push(entry);
    }
}

/// One logged change of one user's roles (its `seq` is its position in the log).
#[derive(Debug)]
pub struct Write {
    at_ms: u64,
    client_id: Arc<str>,
    via: Via,
    user_id: Id,
    external_id: Option<String>,
    roles_before: Vec<String>,
    roles_after: Vec<String>,
    correlation_id: Option<Arc<str>>,
}

struct Inner {
    entries: VecDeque<Arc<Write>>,
    /// The highest seq ever assigned (0: none yet).
    last_seq: u64,
    dropped: u64,
}

/// The log of accepted role writes, at most `cap` entries.
pub struct WriteLog {
    inner: Mutex<Inner>,
    cap: usize,
    /// The org's audit trail, fed by the same calls (`audit_trail.rs`).
    pub trail: crate::audit_trail::AuditTrail,
}

impl Default for WriteLog {
    fn default() -> Self {
        WriteLog::with_capacity(MAX_ENTRIES)
    }
}

/// A page of the log: `(seq, entry)` oldest first, the highest seq ever assigned, and how many
/// entries were dropped for room.
pub struct Page {
    pub writes: Vec<(u64, Arc<Write>)>,
    pub last_seq: u64,
    pub dropped: u64,
}

impl WriteLog {
    pub fn with_capacity(cap: usize) -> WriteLog {
        WriteLog {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                last_seq: 0,
                dropped: 0,
            }),
            cap: cap.max(1),
            trail: crate::audit_trail::AuditTrail::default(),
        }
    }

    fn push(&self, entry: Arc<Write>) {
        let mut inner = lock(&self.inner);
        if inner.entries.len() >= self.cap {
            inner.entries.pop_front();
            inner.dropped += 1;
        }
        inner.entries.push_back(entry);
        inner.last_seq += 1;
    }

    /// The entries with `seq > after`, oldest first, at most `limit`.
    pub fn page(&self, after: u64, limit: usize) -> Page {
        let inner = lock(&self.inner);
        let len = inner.entries.len() as u64;
        let first_seq = inner.last_seq - len + 1;
        let skip = after.saturating_add(1).saturating_sub(first_seq).min(len);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let writes = inner
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .enumerate()
            .map(|(i, w)| (first_seq + (skip + i) as u64, w.clone()))
            .collect();
        Page {
            writes,
            last_seq: inner.last_seq,
            dropped: inner.dropped,
        }
    }

    /// Empties the log; seq starts again at 1 (`POST /emulator/reset`).
    pub fn clear(&self) {
        self.trail.clear();
        let mut inner = lock(&self.inner);
        inner.entries = VecDeque::new();
        inner.last_seq = 0;
        inner.dropped = 0;
    }
}

#[derive(Serialize)]
struct WriteView<'a> {
    seq: u64,
    at_ms: u64,
    client_id: &'a str,
    via: Via,
    user_id: &'a str,
    external_id: Option<&'a str>,
    roles_before: &'a [String],
    roles_after: &'a [String],
    correlation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct PageView<'a> {
    writes: Vec<WriteView<'a>>,
    last_seq: u64,
    dropped: u64,
}

fn bad_query(message: String) -> Response {
    ApiError::genesys(StatusCode::BAD_REQUEST, "bad.request", message).into_response()
}

/// `after` (default 0) and `limit` (default 10 000, at most 100 000; 0 answers no entries but
/// still `last_seq`).
fn parse_query(params: &[(String, String)]) -> Result<(u64, usize), String> {
    let mut after = 0u64;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in params {
        match k.as_str() {
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| format!("after '{v}' must be a non-negative integer (a seq)"))?;
            }
            "limit" => {
                limit = v.parse().ok().filter(|n| *n <= MAX_LIMIT).ok_or_else(|| {
                    format!("limit '{v}' must be an integer from 0 to {MAX_LIMIT}")
                })?;
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// `GET /emulator/writes?after=SEQ&limit=N`.
pub async fn get_writes(
    State(shared): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = match query {
        Ok(Query(p)) => p,
        Err(e) => return bad_query(format!("Invalid query: {e}")),
    };
    let (after, limit) = match parse_query(&params) {
        Ok(v) => v,
        Err(e) => return bad_query(e),
    };
    let page = shared.writes.page(after, limit);
    let view = PageView {
        writes: page
            .writes
            .iter()
            .map(|(seq, w)| WriteView {
                seq: *seq,
                at_ms: w.at_ms,
                client_id: &w.client_id,
                via: w.via,
                user_id: &w.user_id,
                external_id: w.external_id.as_deref(),
                roles_before: &w.roles_before,
                roles_after: &w.roles_after,
                correlation_id: w.correlation_id.as_deref(),
            })
            .collect(),
        last_seq: page.last_seq,
        dropped: page.dropped,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ctx() -> WriteCtx {
        WriteCtx {
            actor: Actor::client(Arc::from("c")),
            correlation_id: None,
        }
    }

    fn roles(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.writes.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn the_log_pages_by_seq_and_drops_the_oldest_past_its_cap() {
        let log = WriteLog::with_capacity(3);
        let ctx = ctx();
        let audit = Audit {
            log: &log,
            ctx: &ctx,
            via: Via::ScimPatch,
        };
        let id: Id = Arc::from("u");
        let (a, b) = (roles(&["Employee"]), roles(&["Agent", "Employee"]));
        audit.record(&id, None, &a, &a); // no change: nothing logged
        assert_eq!(log.page(0, 10).last_seq, 0);
        for _ in 0..5 {
            audit.record(&id, Some("E"), &a, &b);
        }
        let page = log.page(0, 10);
        assert_eq!(seqs(&page), [3, 4, 5]);
        assert_eq!((page.last_seq, page.dropped), (5, 2));
        assert_eq!(seqs(&log.page(3, 10)), [4, 5]);
        assert_eq!(seqs(&log.page(3, 1)), [4]);
        assert_eq!(seqs(&log.page(5, 10)), Vec::<u64>::new());
        assert_eq!(seqs(&log.page(u64::MAX, 10)), Vec::<u64>::new());
        assert_eq!(seqs(&log.page(0, 0)), Vec::<u64>::new());
        log.clear();
        audit.record(&id, None, &b, &a);
        let page = log.page(0, 10);
        assert_eq!((seqs(&page), page.last_seq, page.dropped), (vec![1], 1, 0));
    }

    #[test]
    fn a_correlation_id_is_kept_only_when_short_visible_ascii() {
        let ok = |s: &str| correlation_id(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ok("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(ok(&"x".repeat(200)).map(|s| s.len()), Some(200));
        assert_eq!(ok(&"x".repeat(201)), None);
        assert_eq!(ok("a b"), None);
        assert_eq!(ok(""), None);
        let high = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert_eq!(correlation_id(&high), None);
    }

    #[test]
    fn query_values_are_checked() {
        let q = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            parse_query(&owned)
        };
        assert_eq!(q(&[]), Ok((0, DEFAULT_LIMIT)));
        assert_eq!(q(&[("after", "7"), ("limit", "100000")]), Ok((7, 100_000)));
        assert_eq!(q(&[("limit", "0")]), Ok((0, 0)));
        for bad in [
            ("after", "-1"),
            ("after", "x"),
            ("after", ""),
            ("limit", "100001"),
            ("limit", "-5"),
            ("limit", "1.5"),
        ] {
            assert!(q(&[bad]).is_err(), "{bad:?}");
        }
    }
}
