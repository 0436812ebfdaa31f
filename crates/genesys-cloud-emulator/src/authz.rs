//! The Authorization API's grant endpoints (README, Authorization grants), on the same model as
//! the SCIM users: a user's SCIM `roles` *are* its grants in the org's one division (home), so
//! a grant made here shows in SCIM `roles` (and bumps the user's version, as any change does),
//! and a role written through SCIM shows here.
//!
//! - `GET /api/v2/authorization/divisions/home`: the home division `{id, name, homeDivision}`.
//! - `POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER` with
//!   `{"subjectIds": [...], "divisionIds": [...]}`: grants the role to every subject in every
//!   division (only the home division exists here), 204. Needs `authorization:grant:add`.
//! - `PUT /api/v2/authorization/roles/{roleId}/users/remove` with a JSON array of user ids:
//!   takes the role from every user, 200 with the ids. Needs `authorization:grant:delete`.
//! - `GET /api/v2/authorization/divisions/{divisionId}/grants?pageSize&pageNumber`: the grants
//!   of the division, one `{subjectId, division, role, grantMadeAt}` per (user, role), users in
//!   creation order. Needs `authorization:grant:view`; `pageSize` at most
//!   `--grant-page-size-max`.
//!
//! Invariants: a bulk write is all or nothing. Every subject id is checked before any user
//! changes, and one id that names no live user refuses the whole batch with a 400 that does not
//! say which (Genesys documents no per-subject result; the client has to bisect). More ids than
//! `--bulk-max-subjects` are refused the same way. `Employee` cannot be removed, as through SCIM.
//! The staged `delete_before_bulk_write` users are deleted first, to stage a user deleted
//! between a client's read and its write.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::errors::{ApiError, JSON_CONTENT_TYPE, json_response};
use crate::roles::{EMPLOYEE, bad_param};
use crate::scim::read_json;
use crate::state::Conflict;
use crate::writes::{Audit, Via, WriteCtx};

use crate::permissions::{GRANT_ADD, GRANT_DELETE, GRANT_VIEW, require};

/// Genesys' `request.bytes.max`: a larger body answers 413.
const MAX_BODY: usize = 512_000;

/// A division of the org. The emulator's org has one: home.
#[derive(Debug, Clone)]
pub struct Division {
    pub id: String,
    pub name: String,
}

impl Division {
    pub fn home() -> Division {
        Division {
            id: crate::errors::new_uuid(),
            name: "Home".into(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "homeDivision": true,
            "selfUri": format!("/api/v2/authorization/divisions/{}", self.id),
        })
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::genesys(StatusCode::BAD_REQUEST, "invalid.value", message)
}

fn role_name(shared: &Shared, role_id: &str) -> Result<String, ApiError> {
    shared
        .catalog
        .name_of_id(role_id)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::genesys(
                StatusCode::NOT_FOUND,
                "not.found",
                format!("The role {role_id} was not found"),
            )
        })
}

/// A list of user ids: strings, at least one, at most `--bulk-max-subjects`, no id twice
/// (duplicates are dropped), and every one a live user; else the whole batch is refused.
fn subject_ids(shared: &Shared, v: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    let Some(Value::Array(items)) = v else {
        return Err(invalid(format!("{field} must be a list of user ids")));
    };
    if items.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    let cap = shared.args.bulk_max_subjects;
    if items.len() > cap {
        return Err(ApiError::genesys(
            StatusCode::BAD_REQUEST,
            "bad.request",
            format!(
                "{field} holds {} ids; at most {cap} are allowed",
                items.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let Some(id) = item.as_str() else {
            return Err(invalid(format!("{field} must be a list of user ids")));
        };
        if seen.insert(id) {
            ids.push(id.to_owned());
        }
    }
    if ids
        .iter()
        .any(|id| shared.users.with_user(id, |_| ()).is_none())
    {
        // Which one is not said: the caller cannot tell without bisecting.
        return Err(invalid("One or more subjects were not found"));
    }
    Ok(ids)
}

/// Deletes the users staged in `delete_before_bulk_write`.
fn delete_staged(shared: &Shared) {
    for ext in shared.faults.take_delete_before_bulk_write() {
        for id in shared.users.ids_by_external_id(&ext) {
            let _ = shared
                .users
                .delete(&id, None, Conflict(StatusCode::CONFLICT));
        }
    }
}

/// Adds or takes away `role` for every user of `ids` (already checked); a user whose roles
/// change is logged (`writes.rs`).
fn apply(shared: &Shared, writer: &WriteCtx, ids: &[String], role: &str, grant: bool) {
    let audit = Audit {
        log: &shared.writes,
        ctx: writer,
        via: if grant {
            Via::BulkGrant
        } else {
            Via::BulkRemove
        },
    };
    for id in ids {
        // A user deleted since the check is skipped: nothing to grant to.
        let conflict = Conflict(StatusCode::CONFLICT);
        let _ = shared.users.update(id, None, conflict, Some(&audit), |u| {
            let mut data = u.data.clone();
            if grant {
                data.roles.insert(role.to_owned());
            } else {
                data.roles.remove(role);
            }
            Ok(data)
        });
    }
}

/// `GET /api/v2/authorization/divisions/home`.
pub(crate) async fn home_division(State(shared): State<Shared>) -> Response {
    json_response(
        StatusCode::OK,
        JSON_CONTENT_TYPE,
        &shared.home_division.json(),
    )
}

/// `POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER`.
pub(crate) async fn grant_role(
    State(shared): State<Shared>,
    writer: WriteCtx,
    Path(role_id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        require(&shared, GRANT_ADD)?;
        let params = query.map_err(|e| bad_param(&e.to_string()))?.0;
        if let Some((_, t)) = params.iter().find(|(k, _)| k == "subjectType")
            && t != "PC_USER"
        {
            return Err(invalid(format!(
                "subjectType {t} is not modelled by the emulator (only PC_USER)"
            )));
        }
        let role = role_name(&shared, &role_id)?;
        let body = read_json(&headers, body, MAX_BODY).await?;
        let divisions = match body.get("divisionIds") {
            Some(Value::Array(d)) if !d.is_empty() => d,
            _ => {
                return Err(invalid(
                    "divisionIds must be a non-empty list of division ids",
                ));
            }
        };
        if let Some(other) = divisions
            .iter()
            .find(|d| d.as_str() != Some(shared.home_division.id.as_str()))
        {
            return Err(ApiError::genesys(
                StatusCode::NOT_FOUND,
                "not.found",
                format!("The division {other} was not found"),
            ));
        }
        delete_staged(&shared);
        let ids = subject_ids(&shared, body.get("subjectIds"), "subjectIds")?;
        apply(&shared, &writer, &ids, &role, true);
        Ok(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT /api/v2/authorization/roles/{roleId}/users/remove`.
pub(crate) async fn remove_role_users(
    State(shared): State<Shared>,
    writer: WriteCtx,
    Path(role_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    role_users(&shared, &writer, &role_id, &headers, body, false).await
}

/// `PUT /api/v2/authorization/roles/{roleId}/users/add`: a JSON array of user ids → 200 with
/// the ids; grants the role to each in the home division (as a bulk grant does). Needs
/// `authorization:grant:add`.
pub(crate) async fn add_role_users(
    State(shared): State<Shared>,
    writer: WriteCtx,
    Path(role_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    role_users(&shared, &writer, &role_id, &headers, body, true).await
}

/// `users/add` (`grant`) and `users/remove`: a JSON array of user ids → 200 with the ids.
/// Removing needs `authorization:grant:delete` and never takes `Employee` away.
async fn role_users(
    shared: &Shared,
    writer: &WriteCtx,
    role_id: &str,
    headers: &HeaderMap,
    body: Body,
    grant: bool,
) -> Response {
    let result = async {
        require(shared, if grant { GRANT_ADD } else { GRANT_DELETE })?;
        let role = role_name(shared, role_id)?;
        if !grant && role == EMPLOYEE {
            return Err(invalid("The Employee role cannot be removed"));
        }
        let body = read_json(headers, body, MAX_BODY).await?;
        delete_staged(shared);
        let ids = subject_ids(shared, Some(&body), "the body")?;
        apply(shared, writer, &ids, &role, grant);
        Ok(ids)
    }
    .await;
    match result {
        Ok(ids) => json_response(StatusCode::OK, JSON_CONTENT_TYPE, &json!(ids)),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v2/authorization/divisions/{divisionId}/grants`.
pub(crate) async fn division_grants(
    State(shared): State<Shared>,
    Path(division_id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = (|| {
        require(&shared, GRANT_VIEW)?;
        let params = query.map_err(|e| bad_param(&e.to_string()))?.0;
        let home = &shared.home_division;
        if division_id != home.id {
            return Err(ApiError::genesys(
                StatusCode::NOT_FOUND,
                "not.found",
                format!("The division {division_id} was not found"),
            ));
        }
        let cap = shared.args.grant_page_size_max;
        let mut page_size = 25usize;
        let mut page_number = 1usize;
        for (k, v) in &params {
            let n = || v.parse::<usize>().ok().filter(|n| *n >= 1);
            match k.as_str() {
                "pageSize" => match n() {
                    Some(n) if n <= cap => page_size = n,
                    _ => {
                        return Err(bad_param(&format!(
                            "pageSize '{v}' must be between 1 and {cap}"
                        )));
                    }
                },
                "pageNumber" => {
                    page_number = n().ok_or_else(|| {
                        bad_param(&format!("pageNumber '{v}' is not a positive integer"))
                    })?
                }
                _ => {}
            }
        }
        let division = json!({"id": home.id, "name": home.name});
        let mut total = 0usize;
        let skip = (page_number - 1).saturating_mul(page_size);
        let mut entities = Vec::new();
        for user in shared.users.dump() {
            for role in &user.data.roles {
                if total >= skip && entities.len() < page_size {
                    entities.push(json!({
                        "subjectId": &*user.id,
                        "division": division,
                        "role": {"id": shared.catalog.id_of_name(role), "name": role},
                        "grantMadeAt": user.last_modified,
                    }));
                }
                total += 1;
            }
        }
        Ok(json!({
            "entities": entities,
            "pageSize": page_size,
            "pageNumber": page_number,
            "total": total,
            "pageCount": total.div_ceil(page_size),
        }))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, JSON_CONTENT_TYPE, &body),
        Err(e) => e.into_response(),
    }
}
