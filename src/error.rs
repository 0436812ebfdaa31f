//! One error type for the HTTP API, rendered as `application/problem+json` (RFC 9457):
//! `type`, `title`, `status`, `detail`, and `errors[]` for per-field or per-line problems.
//! Each variant documents its status code. 5xx causes are logged here, once, and never leaked.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A per-field or per-line problem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The field (`assignments[3].external_id`, `mode`) or `line 7`.
    pub field: String,
    pub message: String,
    /// The line of the body, when the problem is on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub column: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `400 Bad Request`: the body or a parameter is malformed.
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// `401 Unauthorized`: no credential, an unknown API key, or a bearer token that does not
    /// verify (the reason is counted and logged as a word, never told).
    #[error("a valid API key or bearer token is required")]
    Unauthorized,
    /// `403 Forbidden`: the key lacks the scope.
    #[error("this API key lacks the scope `{0}`")]
    Forbidden(crate::domain::Scope),
    /// `404 Not Found`
    #[error("{0}")]
    NotFound(String),
    /// `409 Conflict`: the resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// `413 Payload Too Large`
    #[error("{0}")]
    PayloadTooLarge(String),
    /// `415 Unsupported Media Type`
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `422 Unprocessable Entity`: well-formed but not acceptable (e.g. Idempotency-Key reuse).
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// `429 Too Many Requests` with `Retry-After`: this API key has too much in progress.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    /// `503 Service Unavailable` with `Retry-After`: backpressure or shutting down.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u64,
    },
    /// `500 Internal Server Error`: the store failed for good (a transient failure becomes
    /// `Unavailable`, see `From<StoreError>`). Logged; the client sees a generic text.
    #[error("an internal error occurred")]
    Store(crate::store::StoreError),
    /// `500 Internal Server Error`
    #[error("an internal error occurred")]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T, E = ApiError> = Result<T, E>;

/// A store failure that passes by itself (busy, locked, a lost or refused connection, a
/// server restarting) is `503` with `Retry-After`: the client retries, nothing was stored.
/// Anything else is a `500`.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        if e.is_transient() {
            tracing::warn!(error = %e, "the store is unavailable for now; answering 503");
            ApiError::Unavailable {
                detail: "the store is busy or unreachable; try again shortly".into(),
                retry_after_secs: STORE_RETRY_AFTER_SECS,
            }
        } else {
            ApiError::Store(e)
        }
    }
}

/// How long a client is asked to wait after a transient store failure.
const STORE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let message = message.into();
        let field = field.into();
        ApiError::BadRequest {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError {
                field,
                message,
                line: None,
                column: None,
            }],
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn type_slug(&self) -> &'static str {
        slug_of(self.status())
    }
}

/// The `type` slug of a problem of this status (`https://rolesync.dev/problems/<slug>`): one
/// per status code, used by the errors themselves and by the examples of the API document.
pub fn slug_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "too-many-requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    }
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "https://rolesync.dev/problems/bad-request",
    "title": "Bad Request",
    "status": 400,
    "detail": "assignments[0].role_template: required string field is missing",
    "errors": [{"field": "assignments[0].role_template", "message": "required string field is missing"}]
}))]
pub struct Problem {
    /// `https://rolesync.dev/problems/<slug>`, one slug per status code.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status code's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for people; names the field or line when there is one.
    pub detail: String,
    /// Per-field or per-line problems (a malformed body, a refused parameter); absent when
    /// there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

pub fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        kind: format!("https://rolesync.dev/problems/{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            match &self {
                ApiError::Store(e) => tracing::error!(error = %e, "request failed in the store"),
                ApiError::Internal(e) => {
                    tracing::error!(error = format!("{e:#}"), "request failed")
                }
                _ => {}
            }
        }
        let slug = self.type_slug();
        let detail = self.to_string();
        let (errors, retry_after) = match self {
            ApiError::BadRequest { errors, .. } | ApiError::Unprocessable { errors, .. } => {
                (errors, None)
            }
            ApiError::Unavailable {
                retry_after_secs, ..
            }
            | ApiError::TooManyRequests {
                retry_after_secs, ..
            } => (Vec::new(), Some(retry_after_secs)),
            _ => (Vec::new(), None),
        };
        let mut resp = problem_response(status, slug, detail, errors);
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_passing_store_failure_is_503_with_retry_after_and_a_lasting_one_500() {
        let busy: ApiError = StoreError::Sqlx(sqlx::Error::PoolTimedOut).into();
        let resp = busy.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::Sqlx(sqlx::Error::Io(io)).is_transient());
        let corrupt: ApiError = StoreError::Corrupt("x".into()).into();
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let missing: ApiError = StoreError::Sqlx(sqlx::Error::RowNotFound).into();
        assert_eq!(missing.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
