//! `POST /oauth/token`: the client-credentials grant (README, Endpoints). Credentials come in HTTP
//! Basic (preferred) or as `client_id`/`client_secret` form fields (`client_secret_post`); the
//! form must say `grant_type=client_credentials`. The valid clients are `--client-id` with
//! `--client-secret` and every `--client ID:SECRET`; a token remembers its client. Not rate limited, no faults. `expires_in` is
//! `--token-ttl-secs`, or the number staged as `token_expires_in` (written out as it was given;
//! the token still lives `--token-ttl-secs`).

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::Shared;
use crate::audit_trail::{Actor, Person};
use crate::errors::{ApiError, JSON_CONTENT_TYPE};

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Compares in time independent of where the strings first differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The client these credentials name: `--client-id`/`--client-secret` or one of `--client`.
fn client_of<'a>(shared: &'a Shared, id: &str, secret: &str) -> Option<&'a str> {
    let args = &shared.args;
    std::iter::once((&args.client_id, &args.client_secret))
        .chain(args.extra_clients.iter().map(|(i, s)| (i, s)))
        .find(|(i, _)| i.as_str() == id)
        .filter(|(_, s)| same(secret, s))
        .map(|(i, _)| i.as_str())
}

pub async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let fields = match form {
        Ok(Form(f)) => f,
        Err(e) => {
            return ApiError::genesys(
                StatusCode::BAD_REQUEST,
                "bad.request",
                format!(
                    "The token request must be a form (application/x-www-form-urlencoded): {e}"
                ),
            )
            .into_response();
        }
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let credentials = basic_credentials(&headers).or_else(|| {
        Some((
            field("client_id")?.to_string(),
            field("client_secret")?.to_string(),
        ))
    });
    let client = credentials.and_then(|(id, secret)| client_of(&shared, &id, &secret));
    let Some(client_id) = client else {
        return ApiError::genesys(
            StatusCode::UNAUTHORIZED,
            "bad.credentials",
            "Invalid login credentials.",
        )
        .into_response();
    };
    if field("grant_type") != Some("client_credentials") {
        return ApiError::genesys(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "grant_type must be client_credentials",
        )
        .into_response();
    }
    let ttl = shared.args.token_ttl_secs;
    let token = shared.tokens.issue(
        Duration::from_secs(ttl),
        Actor::client(Arc::from(client_id)),
    );
    let staged = shared.faults.staged().expires_in();
    let mut response = (StatusCode::OK, token_body(&token, ttl, staged.as_deref())).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

/// Longest person id and name a person's token takes.
const MAX_PERSON_ID: usize = 128;
const MAX_PERSON_NAME: usize = 256;

/// `POST /emulator/tokens` `{"user": {"id", "name"}, "client_id"?}`: a token that acts for a
/// person through a client, as Genesys' authorization-code grant gives one after the person signs
/// in (the emulator has no sign-in page; README, Audit trail). `client_id` defaults to
/// `--client-id` and must be a valid client. Changes made with it are audited naming the person
/// (`user`) and the client. The answer is `/oauth/token`'s. Admin: not counted, never faulted.
pub async fn person_token(State(shared): State<Shared>, body: axum::body::Bytes) -> Response {
    let bad = |m: &str| {
        ApiError::genesys(StatusCode::BAD_REQUEST, "bad.request", m.to_owned()).into_response()
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad("The body must be JSON: {\"user\": {\"id\", \"name\"}, \"client_id\"}");
    };
    let text = |p: &str, max: usize| {
        v.pointer(p)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.chars().count() <= max)
            .map(str::to_owned)
    };
    let Some(id) = text("/user/id", MAX_PERSON_ID) else {
        return bad("user.id must be a string of 1 to 128 characters");
    };
    let Some(name) = text("/user/name", MAX_PERSON_NAME) else {
        return bad("user.name must be a string of 1 to 256 characters");
    };
    let args = &shared.args;
    let client_id = match v.get("client_id") {
        None | Some(serde_json::Value::Null) => args.client_id.clone(),
        Some(serde_json::Value::String(c)) => c.clone(),
        Some(_) => return bad("client_id must be a string"),
    };
    let known =
        client_id == args.client_id || args.extra_clients.iter().any(|(i, _)| *i == client_id);
    if !known {
        return bad("client_id names no client of this emulator (--client-id or --client)");
    }
    let ttl = args.token_ttl_secs;
    let actor = Actor {
        client_id: Arc::from(client_id.as_str()),
        person: Some(Arc::new(Person { id, name })),
    };
    let token = shared.tokens.issue(Duration::from_secs(ttl), actor);
    let mut response = (StatusCode::OK, token_body(&token, ttl, None)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExpiresIn<'a> {
    Secs(u64),
    /// A validated JSON number, written as it was given.
    Literal(&'a RawValue),
}

#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: ExpiresIn<'a>,
}

/// `{"access_token","token_type":"bearer","expires_in"}`; `expires_in` is `staged` when given.
fn token_body(token: &str, ttl: u64, staged: Option<&RawValue>) -> Vec<u8> {
    let answer = TokenAnswer {
        access_token: token,
        token_type: "bearer",
        expires_in: staged.map_or(ExpiresIn::Secs(ttl), ExpiresIn::Literal),
    };
    serde_json::to_vec(&answer).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_token_answer_carries_a_staged_expires_in_verbatim() {
        let body = token_body("t", 86_400, None);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"access_token":"t","token_type":"bearer","expires_in":86400}"#
        );
        for n in ["18446744073709551616", "-1", "1e400", "-0.5E-3"] {
            let raw = RawValue::from_string(n.to_string()).unwrap();
            let body = token_body("t\"x", 1, Some(&raw));
            let text = String::from_utf8(body).unwrap();
            assert_eq!(
                text,
                format!(r#"{{"access_token":"t\"x","token_type":"bearer","expires_in":{n}}}"#)
            );
            // Still valid JSON, whatever the number.
            serde_json::from_str::<serde::de::IgnoredAny>(&text).unwrap();
        }
    }
}
