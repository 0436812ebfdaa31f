//! API keys with scopes (`auth.keys` in `config/default.toml`). Keys are configured by their SHA-256 only; the
//! presented key is hashed and compared in constant time.

use super::AppState;
use crate::configuration::ApiKeySettings;
pub use crate::domain::Scope;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

/// A configured key, ready to check.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl ApiKey {
    pub fn from_settings(s: &ApiKeySettings) -> Option<ApiKey> {
        let bytes = hex::decode(&s.key_sha256).ok()?;
        let digest: [u8; 32] = bytes.try_into().ok()?;
        let scopes = s.scopes.clone();
        Some(ApiKey {
            name: s.name.clone(),
            digest,
            scopes,
        })
    }
}

/// The hex SHA-256 to put in `auth.keys.key_sha256` for a key.
pub fn key_digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The authenticated caller of a `/v1` request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_name: String,
    scopes: Vec<Scope>,
}

impl Caller {
    /// 403 unless the key has `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        authenticate(&state.keys, presented).ok_or(ApiError::Unauthorized)
    }
}

/// The caller a presented key stands for, if it is one of `keys`: the one check every way in
/// (the API's `Authorization` header, the console's sign-in form) goes through.
pub fn authenticate(keys: &[ApiKey], presented: &str) -> Option<Caller> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found: Option<&ApiKey> = None;
    for key in keys {
        // Compare every key fully, whatever matched, so timing says nothing.
        if constant_time_eq(&key.digest, &digest) {
            found = Some(key);
        }
    }
    found.map(|key| Caller {
        key_name: key.name.clone(),
        scopes: key.scopes.clone(),
    })
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
