//! The authorization role catalog (`GET /api/v2/authorization/roles`, README, Role catalog) and the set
//! of role names SCIM writes may use.
//!
//! The catalog is a JSON array of Genesys `DomainOrganizationRole` objects (`id`, `name`,
//! `description`, `permissions`, `permissionPolicies`, `baseLicense`, …). The built-in one,
//! `config/emulator-roles.json`, matches `config/policy.toml`: `Employee` plus every `[[roles]]`.

use std::collections::HashSet;
use std::path::Path;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::errors::{ApiError, JSON_CONTENT_TYPE, json_response};

pub const EMPLOYEE: &str = "Employee";

/// The role catalog shipped with rolesync (`config/emulator-roles.json`).
pub const DEFAULT_ROLES_JSON: &str = include_str!("../roles.json");

#[derive(Debug, Clone)]
pub struct Catalog {
    roles: Vec<Map<String, Value>>,
    names: HashSet<String>,
}

impl Catalog {
    /// Parses a catalog. Every role needs a unique non-empty `name`; a missing `id` is generated;
    /// `permissionPolicies` is derived from `permissions` when absent. `Employee` is added when
    /// missing, since every user holds it.
    pub fn from_json(text: &str) -> anyhow::Result<Catalog> {
        let value: Value = serde_json::from_str(text)?;
        let items = match value {
            Value::Array(items) => items,
            Value::Object(mut obj) => {
                match obj.remove("entities").or_else(|| obj.remove("roles")) {
                    Some(Value::Array(items)) => items,
                    _ => anyhow::bail!("the roles file must be a JSON array of roles"),
                }
            }
            _ => anyhow::bail!("the roles file must be a JSON array of roles"),
        };
        let mut roles = Vec::with_capacity(items.len() + 1);
        let mut names = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(mut role) = item else {
                anyhow::bail!("role #{} is not an object", i + 1);
            };
            let name = match role.get("name") {
                Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
                _ => anyhow::bail!("role #{} has no name", i + 1),
            };
            if !names.insert(name.clone()) {
                anyhow::bail!("role '{name}' appears twice");
            }
            normalise(&mut role);
            roles.push(role);
        }
        if !names.contains(EMPLOYEE) {
            let mut employee = Map::new();
            employee.insert("name".into(), Value::String(EMPLOYEE.into()));
            employee.insert(
                "description".into(),
                Value::String("Default role assigned to every user; it cannot be removed.".into()),
            );
            normalise(&mut employee);
            roles.insert(0, employee);
            names.insert(EMPLOYEE.into());
        }
        Ok(Catalog { roles, names })
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Catalog> {
        match path {
            None => Catalog::from_json(DEFAULT_ROLES_JSON),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read roles file {}: {e}", p.display()))?;
                Catalog::from_json(&text)
                    .map_err(|e| anyhow::anyhow!("invalid roles file {}: {e}", p.display()))
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Role names in catalog order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
    }

    pub fn roles(&self) -> &[Map<String, Value>] {
        &self.roles
    }

    /// The name of the role with this id.
    pub fn name_of_id(&self, id: &str) -> Option<&str> {
        self.roles
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|r| r.get("name").and_then(Value::as_str))
    }

    /// The id of the role with this name.
    pub fn id_of_name(&self, name: &str) -> Option<&str> {
        self.roles
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|r| r.get("id").and_then(Value::as_str))
    }
}

fn normalise(role: &mut Map<String, Value>) {
    if !matches!(role.get("id"), Some(Value::String(_))) {
        role.insert("id".into(), Value::String(crate::errors::new_uuid()));
    }
    let permissions: Vec<String> = role
        .get("permissions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    role.insert(
        "permissions".into(),
        Value::Array(permissions.iter().cloned().map(Value::String).collect()),
    );
    if !role.contains_key("permissionPolicies") {
        role.insert(
            "permissionPolicies".into(),
            Value::Array(policies(&permissions)),
        );
    }
    role.entry("description")
        .or_insert(Value::String(String::new()));
    role.entry("baseLicense")
        .or_insert(Value::String("Collaborate".into()));
    role.entry("default").or_insert(Value::Bool(false));
    role.entry("base").or_insert(Value::Bool(false));
    let id = role
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    role.insert(
        "selfUri".into(),
        Value::String(format!("/api/v2/authorization/roles/{id}")),
    );
}

/// `domain:entity:action` → `{domain, entityName, actionSet: [action]}`, merging the actions of
/// one domain/entity pair.
pub fn policies(permissions: &[String]) -> Vec<Value> {
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for p in permissions {
        let mut parts = p.splitn(3, ':');
        let (Some(domain), Some(entity), Some(action)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        match out.iter_mut().find(|(d, e, _)| d == domain && e == entity) {
            Some((_, _, actions)) => actions.push(action.to_string()),
            None => out.push((domain.into(), entity.into(), vec![action.into()])),
        }
    }
    out.into_iter()
        .map(|(domain, entity, actions)| json!({"domain": domain, "entityName": entity, "actionSet": actions}))
        .collect()
}

/// `GET /api/v2/authorization/roles`: a Genesys entity listing, `pageSize` (default 25, at most
/// 500) and `pageNumber` (1-based); `name` keeps the roles with that name (case-insensitive).
pub(super) async fn list_roles(
    State(shared): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = crate::permissions::require(&shared, crate::permissions::ROLE_VIEW) {
        return e.into_response();
    }
    let params = match query {
        Ok(Query(p)) => p,
        Err(e) => return bad_param(&e.to_string()).into_response(),
    };
    let mut page_size = 25usize;
    let mut page_number = 1usize;
    let mut names: Vec<String> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "pageSize" => match v.parse::<usize>() {
                Ok(n) if n >= 1 => page_size = n.min(500),
                _ => {
                    return bad_param(&format!("pageSize '{v}' is not a positive integer"))
                        .into_response();
                }
            },
            "pageNumber" => match v.parse::<usize>() {
                Ok(n) if n >= 1 => page_number = n,
                _ => {
                    return bad_param(&format!("pageNumber '{v}' is not a positive integer"))
                        .into_response();
                }
            },
            "name" => names.push(v.clone()),
            "id" => ids.push(v.clone()),
            _ => {}
        }
    }
    let catalog = &shared.catalog;
    let selected: Vec<&Map<String, Value>> = catalog
        .roles()
        .iter()
        .filter(|r| {
            names.is_empty()
                || r.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names.iter().any(|w| w.eq_ignore_ascii_case(n)))
        })
        .filter(|r| {
            ids.is_empty()
                || r.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|i| ids.iter().any(|w| w == i))
        })
        .collect();
    let total = selected.len();
    let page_count = total.div_ceil(page_size);
    let entities: Vec<Value> = selected
        .into_iter()
        .skip((page_number - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|r| Value::Object(r.clone()))
        .collect();
    let uri = |n: usize| format!("/api/v2/authorization/roles?pageSize={page_size}&pageNumber={n}");
    let mut body = json!({
        "entities": entities,
        "pageSize": page_size,
        "pageNumber": page_number,
        "total": total,
        "firstUri": uri(1),
        "selfUri": uri(page_number),
        "lastUri": uri(page_count.max(1)),
        "pageCount": page_count,
    });
    if let Some(obj) = body.as_object_mut() {
        if page_number < page_count {
            obj.insert("nextUri".into(), Value::String(uri(page_number + 1)));
        }
        if page_number > 1 {
            obj.insert("previousUri".into(), Value::String(uri(page_number - 1)));
        }
    }
    json_response(StatusCode::OK, JSON_CONTENT_TYPE, &body)
}

/// `GET /api/v2/authorization/roles/{roleId}`.
pub(super) async fn get_role(
    State(shared): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if let Err(e) = crate::permissions::require(&shared, crate::permissions::ROLE_VIEW) {
        return e.into_response();
    }
    match shared
        .catalog
        .roles()
        .iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str()))
    {
        Some(role) => json_response(
            StatusCode::OK,
            JSON_CONTENT_TYPE,
            &Value::Object(role.clone()),
        ),
        None => ApiError::genesys(
            StatusCode::NOT_FOUND,
            "not.found",
            format!("The role {id} was not found"),
        )
        .into_response(),
    }
}

pub(crate) fn bad_param(message: &str) -> ApiError {
    ApiError::genesys(
        StatusCode::BAD_REQUEST,
        "invalid.query.param.value",
        message.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses() {
        let c = Catalog::from_json(DEFAULT_ROLES_JSON).ok();
        assert!(
            c.as_ref()
                .is_some_and(|c| c.contains(EMPLOYEE) && c.contains("Supervisor"))
        );
    }

    #[test]
    fn policies_from_permissions() {
        let p = policies(&["analytics:*:view".into(), "routing:queue:join".into()]);
        assert_eq!(
            p,
            vec![
                json!({"domain":"analytics","entityName":"*","actionSet":["view"]}),
                json!({"domain":"routing","entityName":"queue","actionSet":["join"]}),
            ]
        );
    }

    #[test]
    fn employee_added_and_duplicates_refused() {
        let c = Catalog::from_json(r#"[{"name":"Agent"}]"#).ok();
        assert!(c.is_some_and(|c| c.contains(EMPLOYEE)));
        assert!(Catalog::from_json(r#"[{"name":"A"},{"name":"A"}]"#).is_err());
        assert!(Catalog::from_json(r#"{"x":1}"#).is_err());
    }
}
