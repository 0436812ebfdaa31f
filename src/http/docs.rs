//! The API's description: generated from the handlers (`#[utoipa::path]`) and the types they
//! take and answer with (`ToSchema`), served at `GET /openapi.json`, and rendered at `/docs` by
//! Swagger UI. Swagger UI's files are compiled into the binary (`utoipa-swagger-ui`'s `vendored`
//! feature): nothing is fetched from elsewhere, at build time or by the browser, so the page works
//! on an air-gapped network.
//!
//! What every operation shares is added here, once (`complete`): the bearer scheme and `401` on
//! every `/v1` operation, `500` on each of them, and the problem+json body (with an example) of
//! every error response the handlers list.

use crate::error::{FieldError, Problem, slug_of};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the interactive documentation is served (and everything under it: its files).
pub const DOCS_PATH: &str = "/docs";
/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// The names of the security schemes every `/v1` operation takes, either of them: an API key,
/// or a bearer token (JWT) from a configured issuer.
const BEARER: &str = "bearer";
const TOKEN: &str = "token";

/// The document's root; the operations come from the router (`super::api`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rolesync",
        description = "Keeps Genesys Cloud user roles in step with an HR system.\n\n\
            Every `/v1` operation needs `Authorization: Bearer <api key>` (scheme `bearer`) or \
            `Authorization: Bearer <JWT>` from a provider configured in `[[auth.issuers]]` \
            (scheme `token`); a key, or a token's claims, carry scopes (`jobs:write`, \
            `jobs:read`, `roles:privileged`, `events:write`, `admin`, which implies the others), and each \
            operation names the one it needs. An address that fails to authenticate too often \
            is answered 429 for a while (`auth.failures`). Errors are `application/problem+json` \
            (RFC 9457), naming the field or line at fault. `/healthz`, `/readyz`, `/metrics` and \
            this document need no key."
    ),
    tags(
        (name = "jobs", description = "Submit batches, follow jobs, read their rows; validate a batch without a job"),
        (name = "policy", description = "The access policy in force"),
        (name = "webhooks", description = "The audit outbox: webhook deliveries"),
        (name = "drift", description = "Genesys audit events pushed by Amazon EventBridge: drift found as it happens"),
        (name = "target", description = "The Genesys Cloud org rolesync writes to: a preflight of it"),
        (name = "operations", description = "Liveness, readiness, metrics and this document; no API key"),
    ),
    components(schemas(Problem, FieldError))
)]
struct ApiDoc;

/// The root, before the operations are added.
pub(super) fn root() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: built once, from the same routes as the router.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string(&super::openapi_document()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document could not be serialised");
        String::new()
    })
});

/// The OpenAPI document
///
/// This API's description (OpenAPI 3.1), generated from the code that serves it. No API key.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json",
            body = serde_json::Value),
    )
)]
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// Swagger UI at `DOCS_PATH`, reading `OPENAPI_PATH`: "Try it out" sends real requests, with
/// the key given under "Authorize" (kept in the page's memory only).
pub(super) fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new(DOCS_PATH).config(
        Config::new([OPENAPI_PATH])
            // No badge from the public validator: the page makes no request elsewhere.
            .validator_url("none")
            .try_it_out_enabled(true)
            .display_request_duration(true)
            .filter(true),
    )
}

/// Adds what every operation shares: see the module's comment.
pub(super) fn complete(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key of `auth.keys` or `auth.keys_file` (configured by its SHA-256: `rolesync hash-key`).",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token (JWT, asymmetrically signed) from an issuer of `auth.issuers`: \
                     `iss`, `aud`, `exp` and `nbf` are checked, and its claims map to scopes \
                     (`auth.issuers.grants`).",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let authenticated = path.starts_with("/v1/");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            if authenticated {
                require_key(op);
            }
            add_problem_bodies(op);
        }
    }
}

/// Every `/v1` handler takes a `Caller`: no key or an unknown one is a 401, before anything else,
/// and an address over its limit of failures a 429; a lasting store failure is a 500 on any of
/// them.
fn require_key(op: &mut Operation) {
    op.security = Some(vec![
        SecurityRequirement::new::<_, _, &str>(BEARER, []),
        SecurityRequirement::new::<_, _, &str>(TOKEN, []),
    ]);
    let responses = &mut op.responses.responses;
    responses.entry("401".into()).or_insert_with(|| {
        RefOr::T(Response::new(
            "No `Authorization: Bearer` credential, a key that is not configured, or a token that does not verify",
        ))
    });
    responses.entry("429".into()).or_insert_with(|| {
        RefOr::T(Response::new(
            "This address failed to authenticate more than `auth.failures.max_failures` times in `auth.failures.window_secs`",
        ))
    });
    responses.entry("500".into()).or_insert_with(|| {
        RefOr::T(Response::new(
            "An internal error (a lasting store failure): logged, never detailed to the client",
        ))
    });
}

/// An error response the handler listed without a body gets the problem+json body, an example
/// made from its status and description, and the headers `ApiError` always sends with it.
fn add_problem_bodies(op: &mut Operation) {
    for (code, response) in op.responses.responses.iter_mut() {
        let (Ok(status), RefOr::T(response)) = (code.parse::<u16>(), response) else {
            continue;
        };
        let Ok(status) = StatusCode::from_u16(status) else {
            continue;
        };
        if status.as_u16() < 400 || !response.content.is_empty() {
            continue;
        }
        let example = serde_json::json!({
            "type": format!("https://rolesync.dev/problems/{}", slug_of(status)),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": response.description.replace('`', ""),
        });
        let mut built = ResponseBuilder::new()
            .description(response.description.clone())
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "Problem",
                    ))))
                    .example(Some(example))
                    .build(),
            );
        for (name, header) in std::mem::take(&mut response.headers) {
            if let RefOr::T(h) = header {
                built = built.header(name, h);
            }
        }
        let seconds = || {
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some("Seconds to wait before trying again"))
                .build()
        };
        built = match status {
            StatusCode::UNAUTHORIZED => built.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("`Bearer`"))
                    .build(),
            ),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                built.header("Retry-After", seconds())
            }
            _ => built,
        };
        *response = built.build();
    }
}
