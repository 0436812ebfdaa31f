//! Faults staged for particular calls through `POST /emulator/faults`, as opposed to the random
//! ones of `faults.rs` (README, Faults):
//!
//! - `failing_users`: named users whose writes (PATCH, PUT) and/or reads (GET by id, and any
//!   filtered list whose result includes them) answer a chosen 5xx every time, until the list is
//!   replaced. An entry names a user by SCIM `id` or by `externalId`; the externalId is looked
//!   up at call time, so an entry may name a user created later, and every user sharing that
//!   externalId fails. The list is replaced whole on every update (`[]` clears it).
//! - `override_headers`: the next `count` authenticated API responses carry the given header
//!   values (replacing the emulator's own), and with a `status` answer it instead of running the
//!   call. A response takes its slot under a lock, so exactly `count` responses carry them even
//!   under concurrent calls.
//! - `token_expires_in`: the JSON number `POST /oauth/token` answers in `expires_in`, kept as
//!   the literal text it was given (a number beyond `u64` or `f64` stays as written). Only the
//!   reported value changes: the token's real lifetime stays `--token-ttl-secs`.
//!
//! Invariants: everything stored here was validated when it was set (statuses in range, header
//! names and values valid and bounded, at most `MAX_FAILING_USERS` entries with no key twice,
//! `expires_in` a JSON number), so serving a call never fails on it. The hot path reads an
//! atomic first and takes a lock only while something is staged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::errors::ApiError;
use crate::state::{Directory, Id, lock, read, write};

/// Most entries `failing_users` may hold.
pub const MAX_FAILING_USERS: usize = 10_000;
/// Most headers an override may set.
pub const MAX_OVERRIDE_HEADERS: usize = 32;
/// Longest value of one overridden header, in bytes.
pub const MAX_HEADER_VALUE: usize = 4096;
/// Most bytes of names and values in one override.
pub const MAX_OVERRIDE_BYTES: usize = 16 * 1024;
/// Longest `token_expires_in` number, in characters.
pub const MAX_EXPIRES_IN_CHARS: usize = 1024;

/// Headers an override may not set: they frame the HTTP message (a wrong value would corrupt the
/// connection rather than stage a fault), or the emulator sets them after the override
/// (`inin-correlation-id`, also the `contextId` of error bodies).
const RESERVED_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "inin-correlation-id",
];

/// For `Option<Option<T>>` fields with `#[serde(default)]`: absent → `None` (unchanged),
/// `null` → `Some(None)` (cleared), a value → `Some(Some(v))`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Which calls of a named user fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET /users/{id}`, and filtered lists whose result includes the user.
    Read,
    /// `PATCH` and `PUT /users/{id}`.
    Write,
}

fn yes() -> bool {
    true
}

fn default_failing_status() -> u16 {
    503
}

/// One entry of `failing_users`, as `POST /emulator/faults` takes it and `GET` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailingUser {
    /// The user's SCIM `id` (exactly one of `id` and `external_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The user's `externalId`: every user holding it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// PATCH and PUT of the user fail (default true).
    #[serde(default = "yes")]
    pub writes: bool,
    /// GET of the user, and filtered lists that include it, fail (default false).
    #[serde(default)]
    pub reads: bool,
    /// The status they answer, 500..=599 (default 503).
    #[serde(default = "default_failing_status")]
    pub status: u16,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    writes: bool,
    reads: bool,
    status: StatusCode,
}

impl Rule {
    fn status_for(self, access: Access) -> Option<StatusCode> {
        let covered = match access {
            Access::Read => self.reads,
            Access::Write => self.writes,
        };
        covered.then_some(self.status)
    }
}

/// The `failing_users` list, indexed by id and by externalId.
#[derive(Debug, Default)]
pub struct FailingUsers {
    entries: Vec<FailingUser>,
    by_id: HashMap<String, Rule>,
    by_external_id: HashMap<String, Rule>,
    reads: bool,
    writes: bool,
}

impl FailingUsers {
    /// Validates a `failing_users` list: at most `MAX_FAILING_USERS` entries, each naming a user
    /// by exactly one non-empty `id` or `external_id`, no key twice, a 5xx status, and at least
    /// one of `writes` and `reads`.
    pub fn compile(entries: Vec<FailingUser>) -> Result<FailingUsers, String> {
        if entries.len() > MAX_FAILING_USERS {
            return Err(format!(
                "failing_users holds {} entries; at most {MAX_FAILING_USERS} are allowed",
                entries.len()
            ));
        }
        let mut set = FailingUsers::default();
        for (i, e) in entries.iter().enumerate() {
            let n = i + 1;
            if !(500..=599).contains(&e.status) {
                return Err(format!(
                    "failing_users #{n}: status must be a 5xx (500..=599), not {}",
                    e.status
                ));
            }
            let status = StatusCode::from_u16(e.status)
                .map_err(|_| format!("failing_users #{n}: invalid status {}", e.status))?;
            if !e.writes && !e.reads {
                return Err(format!(
                    "failing_users #{n}: set writes, reads or both (nothing would fail)"
                ));
            }
            let rule = Rule {
                writes: e.writes,
                reads: e.reads,
                status,
            };
            let (map, key, what) = match (&e.id, &e.external_id) {
                (Some(id), None) => (&mut set.by_id, id, "id"),
                (None, Some(ext)) => (&mut set.by_external_id, ext, "external_id"),
                _ => {
                    return Err(format!(
                        "failing_users #{n}: give exactly one of id and external_id"
                    ));
                }
            };
            if key.is_empty() {
                return Err(format!("failing_users #{n}: {what} is empty"));
            }
            if map.insert(key.clone(), rule).is_some() {
                return Err(format!(
                    "failing_users #{n}: {what} '{key}' is listed twice"
                ));
            }
            set.reads |= e.reads;
            set.writes |= e.writes;
        }
        set.entries = entries;
        Ok(set)
    }

    pub fn entries(&self) -> &[FailingUser] {
        &self.entries
    }

    fn covers(&self, access: Access) -> bool {
        match access {
            Access::Read => self.reads,
            Access::Write => self.writes,
        }
    }

    fn by_id(&self, access: Access, id: &str) -> Option<StatusCode> {
        self.by_id.get(id).and_then(|r| r.status_for(access))
    }

    fn by_external_id(&self, access: Access, external_id: Option<&str>) -> Option<StatusCode> {
        self.by_external_id
            .get(external_id?)
            .and_then(|r| r.status_for(access))
    }

    /// The status a call of this kind on the user (`id`, `external_id`) answers, if an entry
    /// covers it; an `id` entry is consulted before an `external_id` one.
    pub fn status_for(
        &self,
        access: Access,
        id: &str,
        external_id: Option<&str>,
    ) -> Option<StatusCode> {
        self.by_id(access, id)
            .or_else(|| self.by_external_id(access, external_id))
    }

    /// As `status_for`, with the externalId looked up in the directory (only when some entry
    /// names an externalId). A user that does not exist matches `id` entries only.
    fn status_in(&self, users: &Directory, access: Access, id: &str) -> Option<StatusCode> {
        if self.by_external_id.is_empty() {
            return self.by_id(access, id);
        }
        users
            .with_user(id, |u| {
                self.status_for(access, id, u.data.external_id.as_deref())
            })
            .unwrap_or_else(|| self.by_id(access, id))
    }
}

/// The update `override_headers` takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOverrideUpdate {
    /// How many responses carry the headers; 0 clears the override.
    pub count: u64,
    /// Header name → value (names are case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// If set (400..=599), those responses answer this status, with the Genesys error body,
    /// instead of running the call.
    #[serde(default)]
    pub status: Option<u16>,
}

/// A validated header override.
#[derive(Debug)]
pub struct HeaderOverride {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The headers as `GET /emulator/faults` shows them (lower-case names).
    shown: BTreeMap<String, String>,
    status: Option<StatusCode>,
}

/// `override_headers` as `GET /emulator/faults` shows it; `count` is what is left.
#[derive(Debug, Serialize)]
pub struct OverrideView {
    pub count: u64,
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl HeaderOverride {
    /// Validates an update: at most `MAX_OVERRIDE_HEADERS` headers, valid names (no framing
    /// header, no `inin-correlation-id`, no name twice), visible-ASCII values of at most
    /// `MAX_HEADER_VALUE` bytes, `MAX_OVERRIDE_BYTES` in all, a status in 400..=599.
    /// `count: 0` is `None` (no override).
    pub fn compile(u: HeaderOverrideUpdate) -> Result<Option<(u64, HeaderOverride)>, String> {
        if u.headers.len() > MAX_OVERRIDE_HEADERS {
            return Err(format!(
                "override_headers: {} headers; at most {MAX_OVERRIDE_HEADERS} are allowed",
                u.headers.len()
            ));
        }
        let status = match u.status {
            None => None,
            Some(s) if (400..=599).contains(&s) => Some(
                StatusCode::from_u16(s)
                    .map_err(|_| format!("override_headers: invalid status {s}"))?,
            ),
            Some(s) => {
                return Err(format!(
                    "override_headers: status must be 400..=599, not {s}"
                ));
            }
        };
        let mut headers = Vec::with_capacity(u.headers.len());
        let mut shown = BTreeMap::new();
        let mut total = 0usize;
        for (name, value) in u.headers {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("override_headers: '{name}' is not a header name"))?;
            let key = parsed.as_str().to_string();
            if RESERVED_HEADERS.contains(&key.as_str()) {
                return Err(format!(
                    "override_headers: '{key}' cannot be overridden (the emulator must set it)"
                ));
            }
            if value.len() > MAX_HEADER_VALUE {
                return Err(format!(
                    "override_headers: the value of '{key}' is over {MAX_HEADER_VALUE} bytes"
                ));
            }
            let hv = HeaderValue::from_str(&value).map_err(|_| {
                format!("override_headers: the value of '{key}' must be visible ASCII")
            })?;
            total += key.len() + value.len();
            if shown.insert(key.clone(), value).is_some() {
                return Err(format!("override_headers: '{key}' is given twice"));
            }
            headers.push((parsed, hv));
        }
        if total > MAX_OVERRIDE_BYTES {
            return Err(format!(
                "override_headers: the headers hold {total} bytes; at most {MAX_OVERRIDE_BYTES} are allowed"
            ));
        }
        if u.count == 0 {
            return Ok(None);
        }
        Ok(Some((
            u.count,
            HeaderOverride {
                headers,
                shown,
                status,
            },
        )))
    }

    /// With a `status`: the answer that replaces the call (the Genesys error body).
    pub fn answer(&self) -> Option<Response> {
        let status = self.status?;
        let retry_after = self.shown.get(header::RETRY_AFTER.as_str());
        Some(error_for(status, retry_after.map(String::as_str)).into_response())
    }

    /// Sets the headers on a response, replacing any value it had.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The Genesys error code of a staged status.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad.request",
        401 => "bad.credentials",
        403 => "missing.permissions",
        404 => "not.found",
        408 => "request.timeout",
        409 => "conflict",
        413 => "request.entity.too.large",
        415 => "unsupported.media.type",
        500 => "internal.server.error",
        502 => "bad.gateway",
        503 => "service.unavailable",
        504 => "gateway.timeout",
        _ => "emulator.fault",
    }
}

/// The Genesys error body a staged status answers with. 503 is the emulator's usual
/// `service.unavailable`; 429 is `too.many.requests.retry.after` naming `retry_after` when the
/// staged headers give one (its header is theirs), else `too.many.requests` without one.
pub fn error_for(status: StatusCode, retry_after: Option<&str>) -> ApiError {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => ApiError::service_unavailable(None),
        StatusCode::TOO_MANY_REQUESTS => match retry_after {
            Some(secs) => ApiError::Genesys {
                status,
                code: "too.many.requests.retry.after",
                message: format!(
                    "Rate limit exceeded the maximum. Retry the request in [{secs}] seconds"
                ),
                retry_after: None,
            },
            None => ApiError::genesys(
                status,
                "too.many.requests",
                "Rate limit exceeded the maximum.",
            ),
        },
        _ => ApiError::genesys(
            status,
            code_for(status),
            status.canonical_reason().unwrap_or("Error"),
        ),
    }
}

/// Validates `token_expires_in`: a JSON number (the parser has checked its syntax) of at most
/// `MAX_EXPIRES_IN_CHARS` characters, kept as written.
pub fn check_expires_in(raw: Box<RawValue>) -> Result<Box<RawValue>, String> {
    let text = raw.get().trim();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err("token_expires_in must be a JSON number or null".into());
    }
    if text.len() > MAX_EXPIRES_IN_CHARS {
        return Err(format!(
            "token_expires_in is over {MAX_EXPIRES_IN_CHARS} characters"
        ));
    }
    if text.len() == raw.get().len() {
        Ok(raw)
    } else {
        RawValue::from_string(text.to_string())
            .map_err(|e| format!("token_expires_in is not a JSON number: {e}"))
    }
}

/// The staged faults of one emulator.
#[derive(Default)]
pub struct Staged {
    failing: RwLock<Arc<FailingUsers>>,
    failing_reads: AtomicBool,
    failing_writes: AtomicBool,
    /// (responses left, the override); `None` once used up. Taken under the lock.
    header_override: Mutex<Option<(u64, Arc<HeaderOverride>)>>,
    /// Responses left, read without the lock; written only under it.
    override_left: AtomicU64,
    expires_in: RwLock<Option<Box<RawValue>>>,
}

impl Staged {
    pub fn set_failing_users(&self, set: FailingUsers) {
        let (reads, writes) = (set.reads, set.writes);
        *write(&self.failing) = Arc::new(set);
        self.failing_reads.store(reads, Ordering::Release);
        self.failing_writes.store(writes, Ordering::Release);
    }

    pub fn failing_users(&self) -> Arc<FailingUsers> {
        read(&self.failing).clone()
    }

    fn active(&self, access: Access) -> Option<Arc<FailingUsers>> {
        let flag = match access {
            Access::Read => &self.failing_reads,
            Access::Write => &self.failing_writes,
        };
        if !flag.load(Ordering::Acquire) {
            return None;
        }
        let set = self.failing_users();
        set.covers(access).then_some(set)
    }

    /// The error a call of this kind on user `id` answers, if a failing-user entry covers it.
    pub fn failing(&self, users: &Directory, access: Access, id: &str) -> Option<ApiError> {
        let set = self.active(access)?;
        set.status_in(users, access, id).map(|s| error_for(s, None))
    }

    /// The error a filtered list answers when its result holds a failing user (the first one
    /// in creation order decides the status).
    pub fn failing_in(&self, users: &Directory, access: Access, ids: &[Id]) -> Option<ApiError> {
        let set = self.active(access)?;
        ids.iter()
            .find_map(|id| set.status_in(users, access, id))
            .map(|s| error_for(s, None))
    }

    /// Replaces the header override (`None` clears it).
    pub fn set_override(&self, o: Option<(u64, HeaderOverride)>) {
        let mut slot = lock(&self.header_override);
        let left = o.as_ref().map_or(0, |(n, _)| *n);
        *slot = o.map(|(n, h)| (n, Arc::new(h)));
        self.override_left.store(left, Ordering::Release);
    }

    /// Takes one response's use of the header override, if any is left.
    pub fn take_override(&self) -> Option<Arc<HeaderOverride>> {
        if self.override_left.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut slot = lock(&self.header_override);
        let (left, o) = slot.as_mut()?;
        let o = o.clone();
        *left = left.saturating_sub(1);
        let remaining = *left;
        if remaining == 0 {
            *slot = None;
        }
        self.override_left.store(remaining, Ordering::Release);
        Some(o)
    }

    pub fn override_view(&self) -> Option<OverrideView> {
        lock(&self.header_override)
            .as_ref()
            .map(|(left, o)| OverrideView {
                count: *left,
                headers: o.shown.clone(),
                status: o.status.map(|s| s.as_u16()),
            })
    }

    pub fn set_expires_in(&self, v: Option<Box<RawValue>>) {
        *write(&self.expires_in) = v;
    }

    pub fn expires_in(&self) -> Option<Box<RawValue>> {
        read(&self.expires_in).clone()
    }

    /// `POST /emulator/reset`: nothing staged.
    pub fn reset(&self) {
        self.set_failing_users(FailingUsers::default());
        self.set_override(None);
        self.set_expires_in(None);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(id: Option<&str>, ext: Option<&str>, writes: bool, reads: bool) -> FailingUser {
        FailingUser {
            id: id.map(str::to_string),
            external_id: ext.map(str::to_string),
            writes,
            reads,
            status: 503,
        }
    }

    #[test]
    fn failing_user_entries_take_defaults() {
        let e: FailingUser = serde_json::from_str(r#"{"external_id": "EMP-1"}"#).unwrap();
        assert_eq!(e, entry(None, Some("EMP-1"), true, false));
        assert!(serde_json::from_str::<FailingUser>(r#"{"id": "x", "typo": 1}"#).is_err());
    }

    #[test]
    fn failing_users_are_validated() {
        let bad = |entries: Vec<FailingUser>| FailingUsers::compile(entries).unwrap_err();
        assert!(bad(vec![entry(None, None, true, false)]).contains("exactly one"));
        assert!(bad(vec![entry(Some("a"), Some("b"), true, false)]).contains("exactly one"));
        assert!(bad(vec![entry(Some(""), None, true, false)]).contains("empty"));
        assert!(bad(vec![entry(Some("a"), None, false, false)]).contains("nothing"));
        assert!(
            bad(vec![
                entry(None, Some("E"), true, false),
                entry(None, Some("E"), false, true)
            ])
            .contains("twice")
        );
        for status in [200, 404, 499, 600, 0] {
            let mut e = entry(Some("a"), None, true, false);
            e.status = status;
            assert!(bad(vec![e]).contains("5xx"), "{status}");
        }
        let many: Vec<FailingUser> = (0..=MAX_FAILING_USERS)
            .map(|i| entry(Some(&i.to_string()), None, true, false))
            .collect();
        assert!(bad(many.clone()).contains("at most"));
        assert!(FailingUsers::compile(many[1..].to_vec()).is_ok());
        // The same key may be named once by id and once by externalId.
        assert!(
            FailingUsers::compile(vec![
                entry(Some("E"), None, true, false),
                entry(None, Some("E"), true, false)
            ])
            .is_ok()
        );
    }

    #[test]
    fn failing_users_match_by_id_then_external_id_and_access() {
        let mut by_id = entry(Some("id-1"), None, true, false);
        by_id.status = 500;
        let set = FailingUsers::compile(vec![
            by_id,
            entry(None, Some("EMP-7"), false, true),
            entry(None, Some("EMP-8"), true, true),
        ])
        .unwrap();
        let w = Access::Write;
        let r = Access::Read;
        assert_eq!(
            set.status_for(w, "id-1", None),
            Some(StatusCode::from_u16(500).unwrap())
        );
        assert_eq!(set.status_for(r, "id-1", None), None);
        assert_eq!(set.status_for(w, "id-2", Some("EMP-7")), None);
        assert_eq!(
            set.status_for(r, "id-2", Some("EMP-7")),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        // An id entry that does not cover the call leaves the externalId entry to decide.
        assert_eq!(
            set.status_for(r, "id-1", Some("EMP-8")),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(set.status_for(w, "id-3", Some("EMP-9")), None);
        assert_eq!(set.status_for(w, "id-3", None), None);
        assert!(set.covers(r) && set.covers(w));
        let writes_only = FailingUsers::compile(vec![entry(Some("a"), None, true, false)]).unwrap();
        assert!(!writes_only.covers(Access::Read));
    }

    #[test]
    fn staged_failing_users_answer_the_genesys_error() {
        let users = Directory::new();
        let staged = Staged::default();
        assert!(staged.failing(&users, Access::Write, "a").is_none());
        let mut e = entry(Some("a"), None, true, false);
        e.status = 502;
        staged.set_failing_users(FailingUsers::compile(vec![e]).unwrap());
        let err = staged.failing(&users, Access::Write, "a").unwrap();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.body()["code"], "bad.gateway");
        assert!(staged.failing(&users, Access::Read, "a").is_none());
        let ids: Vec<Id> = vec![Arc::from("b"), Arc::from("a")];
        assert!(staged.failing_in(&users, Access::Write, &ids).is_some());
        assert!(staged.failing_in(&users, Access::Read, &ids).is_none());
        staged.reset();
        assert!(staged.failing(&users, Access::Write, "a").is_none());
        assert!(staged.failing_users().entries().is_empty());
    }

    fn update(count: u64, headers: &[(&str, &str)], status: Option<u16>) -> HeaderOverrideUpdate {
        HeaderOverrideUpdate {
            count,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status,
        }
    }

    #[test]
    fn header_overrides_are_validated() {
        let bad = |u| HeaderOverride::compile(u).unwrap_err();
        assert!(bad(update(1, &[("bad name", "x")], None)).contains("not a header name"));
        assert!(bad(update(1, &[("content-length", "0")], None)).contains("cannot"));
        assert!(bad(update(1, &[("Transfer-Encoding", "x")], None)).contains("cannot"));
        assert!(bad(update(1, &[("inin-correlation-id", "x")], None)).contains("cannot"));
        assert!(bad(update(1, &[("x-a", "line\nbreak")], None)).contains("visible ASCII"));
        assert!(
            bad(update(
                1,
                &[("Retry-After", "1"), ("retry-after", "2")],
                None
            ))
            .contains("twice")
        );
        let long = "9".repeat(MAX_HEADER_VALUE + 1);
        assert!(bad(update(1, &[("retry-after", &long)], None)).contains("over"));
        let names: Vec<String> = (0..=MAX_OVERRIDE_HEADERS)
            .map(|i| format!("x-h{i}"))
            .collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert!(bad(update(1, &many, None)).contains("at most"));
        let big = "v".repeat(MAX_HEADER_VALUE);
        let names: Vec<String> = (0..5).map(|i| format!("x-h{i}")).collect();
        let heavy: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
        assert!(bad(update(1, &heavy, None)).contains("bytes"));
        assert!(bad(update(1, &[], Some(200))).contains("400..=599"));
        assert!(bad(update(1, &[], Some(600))).contains("400..=599"));
        assert!(
            HeaderOverride::compile(update(0, &[("x-a", "1")], None))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_header_override_is_used_up_after_count_responses() {
        let staged = Staged::default();
        assert!(staged.take_override().is_none());
        let o = HeaderOverride::compile(update(
            2,
            &[
                ("Inin-RateLimit-Reset", "18446744073709551615"),
                ("x-b", ""),
            ],
            None,
        ))
        .unwrap();
        staged.set_override(o);
        let view = staged.override_view().unwrap();
        assert_eq!(view.count, 2);
        assert_eq!(view.headers["inin-ratelimit-reset"], "18446744073709551615");
        let mut h = HeaderMap::new();
        h.insert("inin-ratelimit-reset", HeaderValue::from_static("42"));
        staged.take_override().unwrap().apply(&mut h);
        assert_eq!(h["inin-ratelimit-reset"], "18446744073709551615");
        assert_eq!(h.get_all("inin-ratelimit-reset").iter().count(), 1);
        assert_eq!(h["x-b"], "");
        assert_eq!(staged.override_view().unwrap().count, 1);
        assert!(staged.take_override().unwrap().answer().is_none());
        assert!(staged.take_override().is_none());
        assert!(staged.override_view().is_none());
    }

    #[test]
    fn a_staged_status_answers_the_genesys_body() {
        let o = HeaderOverride::compile(update(1, &[("retry-after", "99999999999")], Some(429)))
            .unwrap()
            .unwrap()
            .1;
        let r = o.answer().unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let e = error_for(StatusCode::TOO_MANY_REQUESTS, Some("99999999999"));
        assert_eq!(e.body()["code"], "too.many.requests.retry.after");
        assert_eq!(
            e.body()["message"],
            "Rate limit exceeded the maximum. Retry the request in [99999999999] seconds"
        );
        let e = error_for(StatusCode::TOO_MANY_REQUESTS, None);
        assert_eq!(e.body()["code"], "too.many.requests");
        assert_eq!(
            error_for(StatusCode::SERVICE_UNAVAILABLE, None),
            ApiError::service_unavailable(None)
        );
        assert_eq!(
            error_for(StatusCode::from_u16(599).unwrap(), None).body()["code"],
            "emulator.fault"
        );
    }

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "present")]
        v: Option<Option<Box<RawValue>>>,
    }

    #[test]
    fn expires_in_is_a_json_number_kept_as_written() {
        let parse = |s: &str| serde_json::from_str::<Holder>(s).unwrap().v;
        assert!(parse("{}").is_none());
        assert!(matches!(parse(r#"{"v": null}"#), Some(None)));
        for n in [
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1e400",
            "-0.5E-3",
            "0",
        ] {
            let raw = parse(&format!(r#"{{"v": {n} }}"#)).unwrap().unwrap();
            assert_eq!(check_expires_in(raw).unwrap().get(), n);
        }
        for v in [r#""12""#, "true", "[1]", r#"{"a":1}"#] {
            let raw = parse(&format!(r#"{{"v": {v}}}"#)).unwrap().unwrap();
            assert!(check_expires_in(raw).is_err(), "{v}");
        }
        let huge = "9".repeat(MAX_EXPIRES_IN_CHARS + 1);
        let raw = parse(&format!(r#"{{"v": {huge}}}"#)).unwrap().unwrap();
        assert!(check_expires_in(raw).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"v": 01}"#).is_err());
    }
}
