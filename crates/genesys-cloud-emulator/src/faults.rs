//! Fault injection on API calls (SCIM and `/api/v2/authorization/*`; never `/oauth/token` nor
//! `/emulator/*`): latency with jitter, an outage window (503), dropped connections, random 503s
//! and random 429s, `forbid` (every call answers 403 `missing.permissions`, as for an OAuth
//! client that lost its role), and `reject_patch` (a share of PATCHes answers 400
//! `invalidValue`, as when the target refuses the writes themselves while answering reads).
//! Knobs are atomics (read on every request without a lock); the RNG is only locked when a knob
//! needs a draw, and is seeded by `--seed` for reproducible runs (the draws follow the order in
//! which requests reach the middleware, so only sequential requests replay identically).
//!
//! The faults staged for particular calls (named failing users, overridden headers, the token's
//! reported `expires_in`) live in `staged.rs`; `Faults` holds them so that one
//! `POST /emulator/faults` body sets, and `POST /emulator/reset` clears, both kinds.
//!
//! A dropped connection: the response body fails before its first byte, so hyper aborts the
//! connection without writing a status line; the client sees the connection closed with no answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::errors::ApiError;
use crate::staged::{
    self, FailingUser, FailingUsers, HeaderOverride, HeaderOverrideUpdate, Staged,
};
use crate::state::{lock, read, write};

/// Most entries of `missing_permissions` and of `delete_before_bulk_write`.
pub const MAX_STAGED_NAMES: usize = 10_000;

/// Marks a response whose connection is dropped (recorded with status 0 in the stats).
#[derive(Clone, Copy, Debug)]
pub struct Dropped;

pub struct Faults {
    fault_5xx: AtomicU64,
    fault_429: AtomicU64,
    drop_connection: AtomicU64,
    latency_ms: AtomicU64,
    latency_jitter_ms: AtomicU64,
    /// Milliseconds since `epoch` at which the outage ends; 0 = none.
    outage_until_ms: AtomicU64,
    rate_limit_per_minute: AtomicU64,
    reject_patch: AtomicU64,
    forbid: AtomicBool,
    omit_versions: AtomicBool,
    /// Write calls left whose answer is lost after they ran (`lose_write_answers`).
    lose_write_answers: AtomicU64,
    /// Permissions the OAuth client lacks: the Authorization endpoints needing one answer 403
    /// `missing.permissions` (`authz.rs`).
    missing_permissions: RwLock<Vec<String>>,
    /// externalIds whose users are deleted just before the next bulk grant write runs (a user
    /// deleted between rolesync's read and its write), then cleared.
    delete_before_bulk_write: Mutex<Vec<String>>,
    staged: Staged,
    initial: FaultSettings,
    rng: Mutex<StdRng>,
    seed: Option<u64>,
    epoch: Instant,
}

/// The knobs, as `GET /emulator/faults` shows them and `POST /emulator/faults` takes them
/// (every field optional there).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultSettings {
    pub fault_5xx: f64,
    pub fault_429: f64,
    pub drop_connection: f64,
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    pub rate_limit_per_minute: u64,
    /// Probability that a PATCH answers 400 `invalidValue` (the write is not applied).
    #[serde(default)]
    pub reject_patch: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    pub fault_5xx: Option<f64>,
    pub fault_429: Option<f64>,
    pub drop_connection: Option<f64>,
    pub latency_ms: Option<u64>,
    pub latency_jitter_ms: Option<u64>,
    /// Starts an outage of this many seconds now (0 ends a running one).
    pub outage_secs: Option<u64>,
    pub rate_limit_per_minute: Option<u64>,
    /// Probability that a PATCH answers 400 `invalidValue`.
    pub reject_patch: Option<f64>,
    /// Every API call answers 403 `missing.permissions` while true.
    pub forbid: Option<bool>,
    /// SCIM answers carry no version (no `ETag`, no `meta.version`) while true: a target a
    /// client must never write to blindly.
    pub omit_versions: Option<bool>,
    /// The next this-many write calls (any API call but a GET) run, and then their answer is
    /// lost: the connection closes with no status line. The write has landed; the client
    /// cannot know it (a timeout after the target acted). 0 clears.
    pub lose_write_answers: Option<u64>,
    /// Replaces the permissions the OAuth client lacks (`[]` clears them).
    pub missing_permissions: Option<Vec<String>>,
    /// Replaces the externalIds whose users are deleted just before the next bulk grant write
    /// (`POST /authorization/roles/{id}`, `PUT …/users/remove`) runs (`[]` clears them).
    pub delete_before_bulk_write: Option<Vec<String>>,
    /// Replaces the named failing users (`[]` clears them).
    pub failing_users: Option<Vec<FailingUser>>,
    /// The next `count` API responses carry these headers (`null` or `count: 0` clears).
    #[serde(default, deserialize_with = "staged::present")]
    pub override_headers: Option<Option<HeaderOverrideUpdate>>,
    /// The number `POST /oauth/token` reports in `expires_in`, as written (`null` clears).
    #[serde(default, deserialize_with = "staged::present")]
    pub token_expires_in: Option<Option<Box<RawValue>>>,
}

fn f64_load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn f64_store(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

fn probability(name: &str, v: Option<f64>) -> Result<Option<f64>, String> {
    match v {
        Some(p) if !(0.0..=1.0).contains(&p) || p.is_nan() => {
            Err(format!("{name} must be a probability between 0 and 1"))
        }
        other => Ok(other),
    }
}

impl Faults {
    pub fn new(initial: FaultSettings, seed: Option<u64>) -> Faults {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let f = Faults {
            fault_5xx: AtomicU64::new(0),
            fault_429: AtomicU64::new(0),
            drop_connection: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
            latency_jitter_ms: AtomicU64::new(0),
            outage_until_ms: AtomicU64::new(0),
            rate_limit_per_minute: AtomicU64::new(0),
            reject_patch: AtomicU64::new(0),
            forbid: AtomicBool::new(false),
            omit_versions: AtomicBool::new(false),
            lose_write_answers: AtomicU64::new(0),
            missing_permissions: RwLock::new(Vec::new()),
            delete_before_bulk_write: Mutex::new(Vec::new()),
            staged: Staged::default(),
            initial: initial.clone(),
            rng: Mutex::new(rng),
            seed,
            epoch: Instant::now(),
        };
        f.set(&initial);
        f
    }

    fn set(&self, s: &FaultSettings) {
        f64_store(&self.fault_5xx, s.fault_5xx.clamp(0.0, 1.0));
        f64_store(&self.fault_429, s.fault_429.clamp(0.0, 1.0));
        f64_store(&self.drop_connection, s.drop_connection.clamp(0.0, 1.0));
        f64_store(&self.reject_patch, s.reject_patch.clamp(0.0, 1.0));
        self.latency_ms.store(s.latency_ms, Ordering::Relaxed);
        self.latency_jitter_ms
            .store(s.latency_jitter_ms, Ordering::Relaxed);
        self.rate_limit_per_minute
            .store(s.rate_limit_per_minute, Ordering::Relaxed);
    }

    pub fn rate_limit_per_minute(&self) -> u64 {
        self.rate_limit_per_minute.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            fault_5xx: f64_load(&self.fault_5xx),
            fault_429: f64_load(&self.fault_429),
            drop_connection: f64_load(&self.drop_connection),
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            latency_jitter_ms: self.latency_jitter_ms.load(Ordering::Relaxed),
            rate_limit_per_minute: self.rate_limit_per_minute(),
            reject_patch: f64_load(&self.reject_patch),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Seconds left in the current outage, if one is running.
    pub fn outage_remaining(&self) -> Option<Duration> {
        let until = self.outage_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn forbid(&self) -> bool {
        self.forbid.load(Ordering::Relaxed)
    }

    pub fn omit_versions(&self) -> bool {
        self.omit_versions.load(Ordering::Relaxed)
    }

    /// Takes one of the write answers to lose, if any is left.
    fn take_lost_write_answer(&self) -> bool {
        self.lose_write_answers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The faults staged for particular calls.
    pub fn staged(&self) -> &Staged {
        &self.staged
    }

    /// Applies a `POST /emulator/faults` body; every field is optional. Everything is validated
    /// before anything changes, so a refused body changes nothing.
    pub fn update(&self, u: FaultUpdate) -> Result<(), String> {
        let p5 = probability("fault_5xx", u.fault_5xx)?;
        let p4 = probability("fault_429", u.fault_429)?;
        let pd = probability("drop_connection", u.drop_connection)?;
        let pr = probability("reject_patch", u.reject_patch)?;
        let failing = u.failing_users.map(FailingUsers::compile).transpose()?;
        for (name, list) in [
            ("missing_permissions", &u.missing_permissions),
            ("delete_before_bulk_write", &u.delete_before_bulk_write),
        ] {
            if let Some(list) = list
                && (list.len() > MAX_STAGED_NAMES || list.iter().any(|v| v.len() > 256))
            {
                return Err(format!(
                    "{name}: at most {MAX_STAGED_NAMES} entries of at most 256 bytes each"
                ));
            }
        }
        let header_override = match u.override_headers {
            None => None,
            Some(None) => Some(None),
            Some(Some(o)) => Some(HeaderOverride::compile(o)?),
        };
        let expires_in = match u.token_expires_in {
            None => None,
            Some(None) => Some(None),
            Some(Some(raw)) => Some(Some(staged::check_expires_in(raw)?)),
        };
        if let Some(set) = failing {
            self.staged.set_failing_users(set);
        }
        if let Some(o) = header_override {
            self.staged.set_override(o);
        }
        if let Some(v) = expires_in {
            self.staged.set_expires_in(v);
        }
        if let Some(p) = p5 {
            f64_store(&self.fault_5xx, p);
        }
        if let Some(p) = p4 {
            f64_store(&self.fault_429, p);
        }
        if let Some(p) = pd {
            f64_store(&self.drop_connection, p);
        }
        if let Some(p) = pr {
            f64_store(&self.reject_patch, p);
        }
        if let Some(v) = u.latency_ms {
            self.latency_ms.store(v.min(600_000), Ordering::Relaxed);
        }
        if let Some(v) = u.latency_jitter_ms {
            self.latency_jitter_ms
                .store(v.min(600_000), Ordering::Relaxed);
        }
        if let Some(v) = u.rate_limit_per_minute {
            self.rate_limit_per_minute.store(v, Ordering::Relaxed);
        }
        if let Some(v) = u.forbid {
            self.forbid.store(v, Ordering::Relaxed);
        }
        if let Some(v) = u.lose_write_answers {
            self.lose_write_answers.store(v, Ordering::Relaxed);
        }
        if let Some(v) = u.omit_versions {
            self.omit_versions.store(v, Ordering::Relaxed);
        }
        if let Some(v) = u.missing_permissions {
            *write(&self.missing_permissions) = v;
        }
        if let Some(v) = u.delete_before_bulk_write {
            *lock(&self.delete_before_bulk_write) = v;
        }
        if let Some(secs) = u.outage_secs {
            let until = if secs == 0 {
                0
            } else {
                self.now_ms().saturating_add(secs.saturating_mul(1000))
            };
            self.outage_until_ms.store(until, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `POST /emulator/reset`: faults off, nothing staged; the rate limit back to its
    /// command-line value.
    pub fn reset(&self) {
        self.staged.reset();
        self.set(&FaultSettings {
            rate_limit_per_minute: self.initial.rate_limit_per_minute,
            ..FaultSettings::default()
        });
        self.outage_until_ms.store(0, Ordering::Relaxed);
        self.forbid.store(false, Ordering::Relaxed);
        self.omit_versions.store(false, Ordering::Relaxed);
        self.lose_write_answers.store(0, Ordering::Relaxed);
        write(&self.missing_permissions).clear();
        lock(&self.delete_before_bulk_write).clear();
    }

    /// Whether the OAuth client holds `permission` (none is withheld unless staged).
    pub fn has_permission(&self, permission: &str) -> bool {
        !read(&self.missing_permissions)
            .iter()
            .any(|p| p == permission)
    }

    pub fn missing_permissions(&self) -> Vec<String> {
        read(&self.missing_permissions).clone()
    }

    pub fn delete_before_bulk_write(&self) -> Vec<String> {
        lock(&self.delete_before_bulk_write).clone()
    }

    /// The externalIds staged for deletion before the next bulk write, cleared as taken.
    pub fn take_delete_before_bulk_write(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.delete_before_bulk_write))
    }
}

enum Verdict {
    Pass,
    Drop,
    Fail5xx,
    Fail429,
    RejectPatch,
}

/// Applies the faults to an API call that passed authentication and the rate limit, then runs
/// the handler (unless a fault answers instead).
pub async fn inject(f: &Faults, req: Request, next: Next) -> Response {
    let latency = f.latency_ms.load(Ordering::Relaxed);
    let jitter = f.latency_jitter_ms.load(Ordering::Relaxed);
    let p_drop = f64_load(&f.drop_connection);
    let p_5xx = f64_load(&f.fault_5xx);
    let p_429 = f64_load(&f.fault_429);
    let p_reject = if req.method() == axum::http::Method::PATCH {
        f64_load(&f.reject_patch)
    } else {
        0.0
    };

    let mut delay = latency;
    let mut verdict = Verdict::Pass;
    if jitter > 0 || p_drop > 0.0 || p_5xx > 0.0 || p_429 > 0.0 || p_reject > 0.0 {
        let mut rng = lock(&f.rng);
        if jitter > 0 {
            delay += rng.random_range(0..=jitter);
        }
        if p_drop > 0.0 && rng.random::<f64>() < p_drop {
            verdict = Verdict::Drop;
        } else if p_5xx > 0.0 && rng.random::<f64>() < p_5xx {
            verdict = Verdict::Fail5xx;
        } else if p_429 > 0.0 && rng.random::<f64>() < p_429 {
            verdict = Verdict::Fail429;
        } else if p_reject > 0.0 && rng.random::<f64>() < p_reject {
            verdict = Verdict::RejectPatch;
        }
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if f.forbid() {
        return ApiError::genesys(
            axum::http::StatusCode::FORBIDDEN,
            "missing.permissions",
            "Unable to perform the requested action. You are missing the following permission(s): [directory:user:edit]",
        )
        .into_response();
    }
    if let Some(left) = f.outage_remaining() {
        return ApiError::service_unavailable(Some(left.as_secs().max(1))).into_response();
    }
    let is_write = req.method() != axum::http::Method::GET;
    match verdict {
        Verdict::Pass if f.omit_versions() => without_versions(next.run(req).await).await,
        Verdict::Pass if is_write && f.take_lost_write_answer() => {
            // The call runs (its write lands), then its answer is lost.
            let _ran = next.run(req).await;
            dropped()
        }
        Verdict::Pass => next.run(req).await,
        Verdict::Drop => dropped(),
        Verdict::Fail5xx => ApiError::service_unavailable(None).into_response(),
        Verdict::Fail429 => ApiError::rate_limited(1).into_response(),
        Verdict::RejectPatch => {
            ApiError::invalid_value("emulator fault: the PATCH was rejected (reject_patch)")
                .into_response()
        }
    }
}

/// `omit_versions`: the answer without `ETag` and without `meta.version` (in a user, or in
/// each of a list's `Resources`). Test-only, so the body is simply re-encoded; an answer
/// over 16 MiB or not JSON passes unchanged but for the header.
async fn without_versions(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(axum::http::header::ETAG);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return ApiError::service_unavailable(None).into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let strip = |u: &mut serde_json::Value| {
        if let Some(meta) = u.get_mut("meta").and_then(|m| m.as_object_mut()) {
            meta.remove("version");
        }
    };
    strip(&mut v);
    if let Some(list) = v.get_mut("Resources").and_then(|r| r.as_array_mut()) {
        list.iter_mut().for_each(strip);
    }
    let body = serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec());
    Response::from_parts(parts, Body::from(body))
}

/// A response whose body fails at once: hyper closes the connection without answering.
fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("emulator fault: connection dropped"))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.extensions_mut().insert(Dropped);
    response
}
