//! The SCIM user endpoints (README, Users, Listing and filters, PATCH), served under both `/api/v2/scim/v2` and
//! `/api/v2/scim`.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::Shared;
use crate::args::Profile;
use crate::errors::{ApiError, scim_bytes};
use crate::filter::{self, CmpOp, Filter, FilterValue};
use crate::patch;
use crate::staged::Access;
use crate::state::{Conflict, Id, IfMatch};
use crate::user::{self, ENTERPRISE_SCHEMA, Projection, Render, USER_SCHEMA, User};
use crate::writes::{Audit, Via, WriteCtx};

const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Genesys `request.bytes.max`.
pub const MAX_BODY: usize = 512_000;
/// Genesys: "A page size over 25 may exceed internal resource limits and return a 429 error."
const GENESYS_PAGE_LIMIT: usize = 25;

/// Where the request's SCIM resources live: `http://host/api/v2/scim/v2` or `…/api/v2/scim`.
pub struct ScimCtx {
    pub base: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ScimCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.0.path())
            .unwrap_or_else(|| parts.uri.path());
        let family = if path.starts_with("/api/v2/scim/v2") {
            "/api/v2/scim/v2"
        } else {
            "/api/v2/scim"
        };
        Ok(ScimCtx {
            base: format!("http://{host}{family}"),
        })
    }
}

fn conflict(profile: Profile) -> Conflict {
    Conflict(match profile {
        Profile::Genesys => StatusCode::CONFLICT,
        Profile::Rfc7644 => StatusCode::PRECONDITION_FAILED,
    })
}

fn weak(profile: Profile) -> bool {
    profile == Profile::Rfc7644
}

fn if_match(headers: &HeaderMap) -> Option<IfMatch> {
    headers
        .get(header::IF_MATCH)
        .map(|v| IfMatch::parse(v.to_str().unwrap_or("")))
}

/// Query parameters, names matched case-insensitively; decoded on access (most requests read
/// two or three of them).
pub struct Params(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params(parts.uri.query().map(str::to_owned)))
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); invalid UTF-8 is replaced.
fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

impl Params {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            form_decode(k)
                .eq_ignore_ascii_case(name)
                .then(|| form_decode(v))
        })
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid_value(format!("{name} must be an integer, not '{v}'"))
            }),
        }
    }

    fn projection(&self) -> Projection {
        Projection::parse(
            self.get("attributes").as_deref(),
            self.get("excludedAttributes").as_deref(),
        )
    }
}

fn with_etag(mut response: Response, user: &User, profile: Profile) -> Response {
    if let Ok(v) = HeaderValue::from_str(&user::etag(user.version, weak(profile))) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn user_response(
    shared: &Shared,
    ctx: &ScimCtx,
    status: StatusCode,
    user: &User,
    projection: &Projection,
) -> Response {
    let render = Render {
        base: &ctx.base,
        weak_etag: weak(shared.profile),
    };
    let mut body = Vec::with_capacity(512);
    user::write_json(user, &render, projection, &mut body);
    with_etag(scim_bytes(status, body), user, shared.profile)
}

/// Reads a JSON body (`application/scim+json` or `application/json`), at most `limit` bytes.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = read_body(headers, body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_syntax(format!("The request body is not valid JSON: {e}")))
}

/// The bytes of a body whose content type is JSON (or absent), at most `limit` of them: 415 for
/// another content type, 413 over the limit.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime.is_empty() || mime == "application/json" || mime.ends_with("+json")) {
            return Err(ApiError::genesys(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported.media.type",
                format!(
                    "Content type '{mime}' is not supported; use application/scim+json or application/json"
                ),
            ));
        }
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::genesys(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.entity.too.large",
            format!("The request is over the size limit. Maximum bytes: {limit}"),
        )
    })
}

fn object(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid_syntax(
            "The request body must be a JSON object.",
        )),
    }
}

/// `urn:…:User:attr` → `attr` when `attr_path` starts with `urn` (case-insensitive) and a colon.
fn strip_urn<'a>(attr_path: &'a str, urn: &str) -> Option<&'a str> {
    let head = attr_path.get(..urn.len())?;
    let rest = attr_path.get(urn.len()..)?;
    if head.eq_ignore_ascii_case(urn) {
        rest.strip_prefix(':')
    } else {
        None
    }
}

/// The users an `eq` filter selects, in creation order. Only a single `eq` is accepted, as
/// Genesys documents (`id`, `userName`, `externalId`, `email`, `active`, `manager`, `division`,
/// `employeeNumber`).
fn select(shared: &Shared, filter_text: &str) -> Result<Vec<Id>, ApiError> {
    let parsed = filter::parse(filter_text.trim())
        .map_err(|e| ApiError::invalid_filter(format!("Invalid filter '{filter_text}': {e}")))?;
    let (attr, value) = match parsed {
        Filter::Cmp {
            attr,
            op: CmpOp::Eq,
            value,
        } => (attr, value),
        Filter::And(..) | Filter::Or(..) | Filter::Not(..) => {
            return Err(ApiError::invalid_filter(format!(
                "Invalid filter '{filter_text}': only a single 'eq' comparison is supported (no and/or/not)."
            )));
        }
        _ => {
            return Err(ApiError::invalid_filter(format!(
                "Invalid filter '{filter_text}': only the 'eq' operator is supported."
            )));
        }
    };
    let (in_enterprise, name) = if let Some(rest) = strip_urn(&attr, USER_SCHEMA) {
        (false, rest.to_ascii_lowercase())
    } else if let Some(rest) = strip_urn(&attr, ENTERPRISE_SCHEMA) {
        (true, rest.to_ascii_lowercase())
    } else {
        (false, attr.to_ascii_lowercase())
    };
    let text = match &value {
        FilterValue::Str(s) => Some(s.clone()),
        FilterValue::Bool(b) => Some(b.to_string()),
        FilterValue::Null => None,
    };
    let dir = &shared.users;
    let unsupported = || {
        ApiError::invalid_filter(format!(
            "Invalid filter '{filter_text}': filtering on '{attr}' is not supported."
        ))
    };
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let enterprise_eq = |u: &User, field: &str, sub: Option<&str>| -> bool {
        let v = u
            .data
            .attrs
            .get(ENTERPRISE_SCHEMA)
            .and_then(|e| e.get(field));
        let v = match sub {
            Some(s) => v.and_then(|m| m.get(s)),
            None => v,
        };
        v.and_then(Value::as_str) == Some(text.as_str())
    };
    let ids = match (in_enterprise, name.as_str()) {
        (false, "id") => dir.with_user(&text, |u| u.id.clone()).into_iter().collect(),
        (false, "username") => dir.id_by_user_name(&text).into_iter().collect(),
        (false, "externalid") => {
            let mut ids = dir.ids_by_external_id(&text);
            if ids.len() > 1 {
                ids.sort_by_key(|id| dir.with_user(id, |u| u.seq).unwrap_or(u64::MAX));
            }
            ids
        }
        (false, "email" | "emails" | "emails.value") => dir.scan(|u| {
            u.data.user_name.eq_ignore_ascii_case(&text)
                || u.data
                    .attrs
                    .get("emails")
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter().any(|e| {
                            e.get("value")
                                .and_then(Value::as_str)
                                .is_some_and(|v| v.eq_ignore_ascii_case(&text))
                        })
                    })
        }),
        (false, "active") => {
            let want = user::parse_bool("active", &Value::String(text.clone())).map_err(|_| {
                ApiError::invalid_filter("active must be compared with true or false")
            })?;
            dir.scan(|u| u.data.active == want)
        }
        (_, "manager" | "manager.value") => {
            dir.scan(|u| enterprise_eq(u, "manager", Some("value")))
        }
        (_, "division") => dir.scan(|u| enterprise_eq(u, "division", None)),
        (_, "employeenumber") => dir.scan(|u| enterprise_eq(u, "employeeNumber", None)),
        _ => return Err(unsupported()),
    };
    Ok(ids)
}

/// `GET /users`.
pub async fn list_users(State(shared): State<Shared>, ctx: ScimCtx, params: Params) -> Response {
    match list_body(&shared, &ctx, &params) {
        Ok(body) => scim_bytes(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

fn list_body(shared: &Shared, ctx: &ScimCtx, params: &Params) -> Result<Vec<u8>, ApiError> {
    let start = params.int("startIndex")?.unwrap_or(1).max(1);
    let count = params
        .int("count")?
        .unwrap_or(GENESYS_PAGE_LIMIT as i64)
        .max(0);
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let projection = params.projection();
    if shared.profile == Profile::Genesys && count > GENESYS_PAGE_LIMIT && projection.is_empty() {
        return Err(ApiError::genesys(
            StatusCode::TOO_MANY_REQUESTS,
            "too.many.requests",
            "A page size over 25 exceeds internal resource limits; use the attributes or excludedAttributes query parameters to trim secondary lookups.",
        ));
    }
    let count = count.min(shared.profile.max_results());
    let ids: Arc<Vec<Id>> = match params.get("filter").filter(|f| !f.trim().is_empty()) {
        Some(f) => {
            let ids = select(shared, &f)?;
            // A named failing user fails every filtered list that would return it.
            if let Some(e) = shared
                .faults
                .staged()
                .failing_in(&shared.users, Access::Read, &ids)
            {
                return Err(e);
            }
            Arc::new(ids)
        }
        None => shared.users.listing(shared.profile == Profile::Rfc7644),
    };
    let render = Render {
        base: &ctx.base,
        weak_etag: weak(shared.profile),
    };
    let page = ids.iter().skip(start - 1).take(count);
    let mut body = Vec::with_capacity(256 + 1024 * count.min(ids.len()));
    body.extend_from_slice(b"{\"schemas\":[\"");
    body.extend_from_slice(LIST_SCHEMA.as_bytes());
    body.extend_from_slice(b"\"],\"Resources\":[");
    let mut items = 0usize;
    for id in page {
        let before = body.len();
        if items > 0 {
            body.push(b',');
        }
        let written = shared
            .users
            .with_user(id, |u| user::write_json(u, &render, &projection, &mut body))
            .is_some();
        if written {
            items += 1;
        } else {
            body.truncate(before); // deleted meanwhile
        }
    }
    let _ = write!(
        body,
        "],\"totalResults\":{},\"startIndex\":{start},\"itemsPerPage\":{items}}}",
        ids.len()
    );
    Ok(body)
}

/// Where a write of this request logs its role changes (`writes.rs`).
fn audit<'a>(shared: &'a Shared, writer: &'a WriteCtx, via: Via) -> Audit<'a> {
    Audit {
        log: &shared.writes,
        ctx: writer,
        via,
    }
}

/// The staged error of a named failing user, if one covers this call (README, Faults).
fn failing(shared: &Shared, access: Access, id: &str) -> Result<(), ApiError> {
    match shared.faults.staged().failing(&shared.users, access, id) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `GET /users/{id}`; `If-None-Match` with the current ETag answers 304.
pub async fn get_user(
    State(shared): State<Shared>,
    ctx: ScimCtx,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if let Err(e) = failing(&shared, Access::Read, &id) {
        return e.into_response();
    }
    let Some(user) = shared.users.get(&id) else {
        return crate::state::not_found(&id).into_response();
    };
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let pre = IfMatch::parse(inm.to_str().unwrap_or(""));
        if pre.matches(user.version) {
            let response = StatusCode::NOT_MODIFIED.into_response();
            return with_etag(response, &user, shared.profile);
        }
    }
    user_response(&shared, &ctx, StatusCode::OK, &user, &params.projection())
}

/// `POST /users`: 201 with the user; 409 `uniqueness` for a userName in use.
pub async fn create_user(
    State(shared): State<Shared>,
    ctx: ScimCtx,
    writer: WriteCtx,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Response {
    let result = async {
        let doc = object(read_json(&headers, body, MAX_BODY).await?)?;
        let data = user::from_json(&doc, &shared.catalog)?;
        if shared.profile == Profile::Genesys
            && data
                .display_name
                .as_deref()
                .is_none_or(|d| d.trim().is_empty())
        {
            return Err(ApiError::invalid_value("displayName is required"));
        }
        let audit = audit(&shared, &writer, Via::ScimPost);
        let created = shared.users.create(data, Some(&audit))?;
        Ok::<_, ApiError>((params, created))
    }
    .await;
    match result {
        Ok((params, created)) => {
            let mut response = user_response(
                &shared,
                &ctx,
                StatusCode::CREATED,
                &created,
                &params.projection(),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("{}/users/{}", ctx.base, created.id)) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `PUT /users/{id}`: replaces the whole user. Attributes missing from the body are cleared,
/// except the write-only `password`, which a client cannot echo.
pub async fn put_user(
    State(shared): State<Shared>,
    ctx: ScimCtx,
    writer: WriteCtx,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Response {
    let result = async {
        // Before the body is read: a failing user fails whatever the request holds.
        failing(&shared, Access::Write, &id)?;
        let doc = object(read_json(&headers, body, MAX_BODY).await?)?;
        if let Some(body_id) = doc
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("id"))
            .map(|(_, v)| v)
            && body_id.as_str() != Some(id.as_str())
            && !body_id.is_null()
        {
            return Err(ApiError::mutability(
                "id in the body does not match the user's id",
            ));
        }
        let mut data = user::from_json(&doc, &shared.catalog)?;
        let pre = if_match(&headers);
        let audit = audit(&shared, &writer, Via::ScimPut);
        let outcome = shared.users.update(
            &id,
            pre.as_ref(),
            conflict(shared.profile),
            Some(&audit),
            |current| {
                if !data.attrs.contains_key("password")
                    && let Some(pw) = current.data.attrs.get("password")
                {
                    data.attrs.insert("password".into(), pw.clone());
                }
                Ok(data)
            },
        )?;
        Ok::<_, ApiError>((params, outcome.user))
    }
    .await;
    match result {
        Ok((params, user)) => {
            user_response(&shared, &ctx, StatusCode::OK, &user, &params.projection())
        }
        Err(e) => e.into_response(),
    }
}

/// `PATCH /users/{id}`. Genesys answers 200 with the user; the RFC 7644 profile answers 204
/// unless `attributes`/`excludedAttributes` ask for the user.
pub async fn patch_user(
    State(shared): State<Shared>,
    ctx: ScimCtx,
    writer: WriteCtx,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Response {
    let result = async {
        // Before the body is read: a failing user fails whatever the request holds.
        failing(&shared, Access::Write, &id)?;
        let ops = patch::parse_request(&read_json(&headers, body, MAX_BODY).await?)?;
        let pre = if_match(&headers);
        let catalog = &shared.catalog;
        let audit = audit(&shared, &writer, Via::ScimPatch);
        let outcome = shared.users.update(
            &id,
            pre.as_ref(),
            conflict(shared.profile),
            Some(&audit),
            |current| {
                let mut doc = user::to_patch_doc(current);

                patch::apply(&mut doc, &ops)?;
                if doc.get("id").and_then(Value::as_str) != Some(&*current.id) {
                    return Err(ApiError::mutability("Attribute 'id' is read-only."));
                }
                // A user always has a state: removing `active` leaves it as it was.
                doc.entry("active")
                    .or_insert(Value::Bool(current.data.active));
                user::from_json(&doc, catalog)
            },
        )?;
        Ok::<_, ApiError>((params, outcome.user))
    }
    .await;
    match result {
        Ok((params, user)) => {
            let projection = params.projection();
            if shared.profile == Profile::Rfc7644 && projection.is_empty() {
                with_etag(
                    StatusCode::NO_CONTENT.into_response(),
                    &user,
                    shared.profile,
                )
            } else {
                user_response(&shared, &ctx, StatusCode::OK, &user, &projection)
            }
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /users/{id}`: a soft delete, 204.
pub async fn delete_user(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let pre = if_match(&headers);
    match shared
        .users
        .delete(&id, pre.as_ref(), conflict(shared.profile))
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /.search` and `POST /users/.search`: Genesys has no search endpoint.
pub async fn search_not_implemented() -> Response {
    ApiError::scim(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "POST .search is not supported; use GET with a filter.",
    )
    .into_response()
}
