//! Bearer-token authentication and the per-token rate limit of the Genesys Platform API
//! (README, Rate limit): a fixed one-minute window per token, opened by the token's first request.
//! Every authenticated API response carries `inin-ratelimit-allowed`, `inin-ratelimit-count`
//! (requests in the current window, this one included) and `inin-ratelimit-reset` (seconds until
//! the window resets); over the limit the answer is 429 with `Retry-After` and the Genesys body
//! (`too.many.requests.retry.after`). With the limit off (0) the headers are left out.
//!
//! Each token remembers the OAuth client it was issued to (and, for a person's token, the
//! person); the guard hands them to the handlers
//! (`writes::Caller`) for the write log. The guard is also where a staged header override
//! (`staged.rs`) is used up: one use per authenticated API call, its headers set last so they
//! replace the emulator's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Emulator;
use crate::audit_trail::Actor;
use crate::errors::ApiError;
use crate::state::{lock, read, write};
use crate::writes::Caller;

const ALLOWED: HeaderName = HeaderName::from_static("inin-ratelimit-allowed");
const COUNT: HeaderName = HeaderName::from_static("inin-ratelimit-count");
const RESET: HeaderName = HeaderName::from_static("inin-ratelimit-reset");
const WINDOW: Duration = Duration::from_secs(60);

pub struct Token {
    expires_at: Instant,
    /// The OAuth client it was issued to, and the person it acts for (a person's token).
    actor: Actor,
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    count: u64,
}

/// Issued access tokens.
#[derive(Default)]
pub struct Tokens {
    map: RwLock<HashMap<String, Arc<Token>>>,
}

impl Tokens {
    /// A new token for `actor` (a client, or a person through a client), living `ttl`.
    pub fn issue(&self, ttl: Duration, actor: Actor) -> String {
        use base64::Engine;
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut map = write(&self.map);
        if map.len() >= 10_000 {
            map.retain(|_, t| t.expires_at > now);
        }
        map.insert(
            token.clone(),
            Arc::new(Token {
                expires_at: now + ttl,
                actor,
                window: Mutex::new(Window {
                    start: now,
                    count: 0,
                }),
            }),
        );
        token
    }

    /// The live token with this value.
    pub fn get(&self, token: &str) -> Option<Arc<Token>> {
        let t = read(&self.map).get(token).cloned()?;
        (t.expires_at > Instant::now()).then_some(t)
    }

    pub fn clear(&self) {
        write(&self.map).clear();
    }
}

struct Decision {
    count: u64,
    reset_secs: u64,
}

impl Token {
    fn hit(&self) -> Decision {
        let now = Instant::now();
        let mut w = lock(&self.window);
        if now.duration_since(w.start) >= WINDOW {
            w.start = now;
            w.count = 0;
        }
        w.count += 1;
        let left = WINDOW.saturating_sub(now.duration_since(w.start));
        Decision {
            count: w.count,
            reset_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The API guard: authentication, then one use of a staged header override (whose `status`,
/// if it has one, answers instead of everything below), the rate limit, then the faults
/// (`faults::inject`). The override's headers are set last, over the rate-limit headers. A
/// request without a valid token gets its 401 untouched and uses up no override.
pub async fn guard(shared: &Emulator, mut req: Request, next: Next) -> Response {
    let token = match bearer(req.headers()) {
        None if req.headers().contains_key(header::AUTHORIZATION) => {
            return unauthorized("bad.credentials", "Invalid login credentials.");
        }
        None => {
            return unauthorized(
                "authentication.required",
                "No authentication bearer token specified in authorization header.",
            );
        }
        Some(t) => match shared.tokens.get(t) {
            Some(token) => token,
            None => return unauthorized("bad.credentials", "Invalid login credentials."),
        },
    };
    // The handlers that write roles log the token's client (`writes.rs`).
    req.extensions_mut().insert(Caller(token.actor.clone()));
    let staged = shared.faults.staged().take_override();
    let limit = shared.faults.rate_limit_per_minute();
    // Every authenticated request counts, whatever answers it.
    let decision = (limit > 0).then(|| token.hit());
    let mut response = if let Some(answer) = staged.as_ref().and_then(|o| o.answer()) {
        answer
    } else if let Some(d) = decision.as_ref().filter(|d| d.count > limit) {
        ApiError::rate_limited(d.reset_secs.max(1)).into_response()
    } else {
        crate::faults::inject(&shared.faults, req, next).await
    };
    let h = response.headers_mut();
    if let Some(d) = decision {
        h.insert(ALLOWED, HeaderValue::from(limit));
        h.insert(COUNT, HeaderValue::from(d.count));
        h.insert(RESET, HeaderValue::from(d.reset_secs));
    }
    if let Some(o) = staged {
        o.apply(h);
    }
    response
}

fn unauthorized(code: &'static str, message: &str) -> Response {
    ApiError::genesys(StatusCode::UNAUTHORIZED, code, message).into_response()
}
