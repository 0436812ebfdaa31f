//! The two error shapes Genesys Cloud answers with (README, Error shapes), the correlation id every
//! response carries, and small response helpers.
//!
//! - `ScimError`: `{"schemas":[Error URN],"status":"409","scimType":…,"detail":…}` (status is a
//!   string), used by the SCIM endpoints for SCIM-specific failures.
//! - Genesys `ErrorBody`: `{"message","code","status"(number),"contextId","details":[],"errors":[]}`,
//!   used for authentication, rate limits, faults and the Platform API.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";
pub const JSON_CONTENT_TYPE: &str = "application/json";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("inin-correlation-id");

/// The detail Genesys gives for a stale `If-Match` (swagger, PUT/PATCH/DELETE 409).
pub const VERSION_MISMATCH: &str = "Version does not match current version.";

tokio::task_local! {
    /// The `inin-correlation-id` of the request being served; error bodies reuse it as
    /// `contextId`.
    pub static CORRELATION_ID: uuid::Uuid;
}

/// A random (v4) UUID from the thread-local RNG (no syscall per request).
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

pub fn new_uuid() -> String {
    random_uuid().to_string()
}

/// The correlation id of the current request, or a fresh one outside a request.
pub fn correlation_id() -> String {
    CORRELATION_ID
        .try_with(|id| id.to_string())
        .unwrap_or_else(|_| new_uuid())
}

/// A UUID as a header value, without an intermediate `String`.
pub fn uuid_header(id: &uuid::Uuid) -> Option<HeaderValue> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes()).ok()
}

/// An error answer, in one of the two Genesys shapes.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    Scim {
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: String,
    },
    Genesys {
        status: StatusCode,
        code: &'static str,
        message: String,
        retry_after: Option<u64>,
    },
}

impl ApiError {
    pub fn scim(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        ApiError::Scim {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn genesys(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Genesys {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }

    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::BAD_REQUEST, Some("invalidPath"), detail)
    }

    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::BAD_REQUEST, Some("noTarget"), detail)
    }

    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::BAD_REQUEST, Some("mutability"), detail)
    }

    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }

    pub fn scim_not_found(detail: impl Into<String>) -> Self {
        Self::scim(StatusCode::NOT_FOUND, None, detail)
    }

    /// The 429 of the per-token rate limit (and of `fault_429`).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        ApiError::Genesys {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too.many.requests.retry.after",
            message: format!(
                "Rate limit exceeded the maximum. Retry the request in [{retry_after_secs}] seconds"
            ),
            retry_after: Some(retry_after_secs),
        }
    }

    pub fn service_unavailable(retry_after: Option<u64>) -> Self {
        ApiError::Genesys {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "service.unavailable",
            message: "Service Unavailable".into(),
            retry_after,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Scim { status, .. } | ApiError::Genesys { status, .. } => *status,
        }
    }

    pub fn body(&self) -> Value {
        match self {
            ApiError::Scim {
                status,
                scim_type,
                detail,
            } => {
                let mut body = json!({
                    "schemas": [ERROR_SCHEMA],
                    "status": status.as_u16().to_string(),
                    "detail": detail,
                });
                if let (Some(t), Some(obj)) = (scim_type, body.as_object_mut()) {
                    obj.insert("scimType".into(), Value::String((*t).into()));
                }
                body
            }
            ApiError::Genesys {
                status,
                code,
                message,
                ..
            } => json!({
                "message": message,
                "code": code,
                "status": status.as_u16(),
                "contextId": correlation_id(),
                "details": [],
                "errors": [],
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let content_type = match self {
            ApiError::Scim { .. } => SCIM_CONTENT_TYPE,
            ApiError::Genesys { .. } => JSON_CONTENT_TYPE,
        };
        let mut response = json_response(self.status(), content_type, &self.body());
        if let ApiError::Genesys {
            retry_after: Some(secs),
            ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON response with the given content type.
pub fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A SCIM response from an already serialised body.
pub fn scim_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}

/// A SCIM (`application/scim+json`) response.
pub fn scim_response(status: StatusCode, body: &Value) -> Response {
    json_response(status, SCIM_CONTENT_TYPE, body)
}
