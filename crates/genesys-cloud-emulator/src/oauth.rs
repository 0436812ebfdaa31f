//! `POST /oauth/token`: the client-credentials grant (README, Endpoints). Credentials come in HTTP
//! Basic (preferred) or as `client_id`/`client_secret` form fields (`client_secret_post`); the
//! form must say `grant_type=client_credentials`. Not rate limited, no faults.

use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use crate::Shared;
use crate::errors::{ApiError, JSON_CONTENT_TYPE, json_response};

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
    let valid = credentials.is_some_and(|(id, secret)| {
        same(&id, &shared.args.client_id) && same(&secret, &shared.args.client_secret)
    });
    if !valid {
        return ApiError::genesys(
            StatusCode::UNAUTHORIZED,
            "bad.credentials",
            "Invalid login credentials.",
        )
        .into_response();
    }
    if field("grant_type") != Some("client_credentials") {
        return ApiError::genesys(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "grant_type must be client_credentials",
        )
        .into_response();
    }
    let ttl = shared.args.token_ttl_secs;
    let token = shared.tokens.issue(Duration::from_secs(ttl));
    json_response(
        StatusCode::OK,
        JSON_CONTENT_TYPE,
        &json!({"access_token": token, "token_type": "bearer", "expires_in": ttl}),
    )
}
