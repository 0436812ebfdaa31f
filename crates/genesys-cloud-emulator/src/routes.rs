//! The router: every route of the emulator, the SCIM path normalisation and the fallback.

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::Shared;
use crate::{admin, audit_api, authz, discovery, errors, oauth, roles, scim};

/// Lower-cases the resource segment of a SCIM path (`/api/v2/scim/v2/Users/…` →
/// `/api/v2/scim/v2/users/…`) so RFC-spelt paths reach the Genesys routes.
pub(crate) fn normalise_scim_path(mut req: Request) -> Request {
    const RESOURCES: [&str; 5] = [
        "users",
        "serviceproviderconfig",
        "schemas",
        "resourcetypes",
        ".search",
    ];
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/api/v2/scim/v2/")
        .or_else(|| path.strip_prefix("/api/v2/scim/"));
    let Some(rest) = rest else {
        return req;
    };
    let segment = rest.split('/').next().unwrap_or("");
    if segment.chars().all(|c| !c.is_ascii_uppercase())
        || !RESOURCES.iter().any(|r| r.eq_ignore_ascii_case(segment))
    {
        return req;
    }
    let prefix_len = path.len() - rest.len();
    let mut new_path = String::with_capacity(path.len() + 16);
    new_path.push_str(&path[..prefix_len]);
    new_path.push_str(&segment.to_ascii_lowercase());
    new_path.push_str(&rest[segment.len()..]);
    if let Some(q) = req.uri().query() {
        new_path.push('?');
        new_path.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = new_path.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// No route: a SCIM `Error` 404 under the SCIM paths, a Genesys 404 elsewhere.
async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/api/v2/scim") {
        errors::ApiError::scim_not_found(format!("No resource at {}", uri.path())).into_response()
    } else {
        errors::ApiError::genesys(
            StatusCode::NOT_FOUND,
            "not.found",
            "The requested operation failed with status 404",
        )
        .into_response()
    }
}

/// The SCIM routes under `prefix` (registered with their full paths rather than nested: no
/// prefix stripping on every request).
fn scim_routes(router: Router<Shared>, prefix: &str) -> Router<Shared> {
    router
        .route(
            &format!("{prefix}/users"),
            get(scim::list_users).post(scim::create_user),
        )
        .route(
            &format!("{prefix}/users/{{id}}"),
            get(scim::get_user)
                .put(scim::put_user)
                .patch(scim::patch_user)
                .delete(scim::delete_user),
        )
        .route(
            &format!("{prefix}/users/.search"),
            post(scim::search_not_implemented),
        )
        .route(
            &format!("{prefix}/.search"),
            post(scim::search_not_implemented),
        )
        .route(
            &format!("{prefix}/serviceproviderconfig"),
            get(discovery::service_provider_config),
        )
        .route(&format!("{prefix}/schemas"), get(discovery::schemas))
        .route(&format!("{prefix}/schemas/{{id}}"), get(discovery::schema))
        .route(
            &format!("{prefix}/resourcetypes"),
            get(discovery::resource_types),
        )
        .route(
            &format!("{prefix}/resourcetypes/{{id}}"),
            get(discovery::resource_type),
        )
}

pub(crate) fn router(shared: Shared) -> Router {
    let api = scim_routes(Router::new(), "/api/v2/scim/v2");
    let api = scim_routes(api, "/api/v2/scim")
        .route("/api/v2/authorization/roles", get(roles::list_roles))
        .route(
            "/api/v2/authorization/roles/{roleId}",
            get(roles::get_role).post(authz::grant_role),
        )
        .route(
            "/api/v2/authorization/roles/{roleId}/users/remove",
            put(authz::remove_role_users),
        )
        .route(
            "/api/v2/authorization/roles/{roleId}/users/add",
            put(authz::add_role_users),
        )
        .route("/api/v2/audits/query", post(audit_api::create_query))
        .route("/api/v2/audits/query/realtime", post(audit_api::realtime))
        .route(
            "/api/v2/audits/query/servicemapping",
            get(audit_api::service_mapping),
        )
        .route(
            "/api/v2/audits/query/realtime/servicemapping",
            get(audit_api::service_mapping),
        )
        .route(
            "/api/v2/audits/query/{transactionId}",
            get(audit_api::query_status),
        )
        .route(
            "/api/v2/audits/query/{transactionId}/results",
            get(audit_api::query_results),
        )
        .route(
            "/api/v2/authorization/divisions/home",
            get(authz::home_division),
        )
        .route(
            "/api/v2/authorization/divisions/{divisionId}/grants",
            get(authz::division_grants),
        );
    Router::new()
        .merge(api)
        .route("/oauth/token", post(oauth::token))
        .nest("/emulator", admin::router())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            admin::observe,
        ))
        .with_state(shared)
}
