//! The org's catalogs, as the Platform API gives them: the role catalog (names and ids, cached
//! for every job's check against the org and for the Authorization path), the home division,
//! and the division's grants.

use super::{CallTally, ScimClient, parse, path_segment};
use crate::scim::ScimError;
use std::time::Duration;
use tokio::time::Instant;

/// A role as the target's catalog (`GET /api/v2/authorization/roles`) describes it.
#[derive(Debug, Clone)]
pub struct TargetRole {
    /// The role's id in the target (empty when the catalog gave none).
    pub id: String,
    pub name: String,
    pub permissions: Vec<String>,
}

/// What the Authorization write path needs of the target: its home division and the id of
/// each role name (`GET …/divisions/home`, `GET …/authorization/roles`).
#[derive(Debug)]
pub struct AuthzCatalog {
    pub home_division: String,
    pub role_ids: std::collections::HashMap<String, String>,
}

/// The org's roles as its catalog listed them, and when it was read.
#[derive(Debug)]
pub struct RoleCatalog {
    /// Every role name, exactly as the org spells it (case-sensitive, as SCIM matches them).
    pub names: std::collections::BTreeSet<String>,
    /// The id of each role that has one.
    pub role_ids: std::collections::HashMap<String, String>,
    pub read_at: std::time::SystemTime,
}

/// How long a fetched role catalog (and `AuthzCatalog`) is used before it is fetched again:
/// the catalog is read at most once per this period per process, whatever the number of jobs.
const AUTHZ_CATALOG_TTL: Duration = Duration::from_secs(600);

/// Roles per page of the catalog read (Genesys' largest `pageSize`).
const ROLE_PAGE_SIZE: u64 = 500;

impl ScimClient {
    /// The target's role catalog (Genesys Platform API), every page.
    pub async fn list_roles(&self, tally: &CallTally) -> Result<Vec<TargetRole>, ScimError> {
        let mut roles = Vec::new();
        for page in 1..=1000u64 {
            let query = [
                ("pageSize", ROLE_PAGE_SIZE.to_string()),
                ("pageNumber", page.to_string()),
            ];
            let a = self
                .get(
                    "/authorization/roles",
                    format!("{}/api/v2/authorization/roles", self.api_base),
                    &query,
                    tally,
                )
                .await?;
            let v: serde_json::Value = parse(&a.body)?;
            let entities = v
                .get("entities")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            for e in &entities {
                let Some(name) = e.get("name").and_then(|n| n.as_str()) else {
                    continue;
                };
                let mut permissions = Vec::new();
                for p in e
                    .get("permissionPolicies")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                {
                    let domain = p.get("domain").and_then(|d| d.as_str()).unwrap_or("*");
                    let entity = p.get("entityName").and_then(|d| d.as_str()).unwrap_or("*");
                    for action in p
                        .get("actionSet")
                        .and_then(|a| a.as_array())
                        .into_iter()
                        .flatten()
                    {
                        if let Some(action) = action.as_str() {
                            permissions.push(format!("{domain}:{entity}:{action}"));
                        }
                    }
                }
                roles.push(TargetRole {
                    id: e
                        .get("id")
                        .and_then(|i| i.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    name: name.to_owned(),
                    permissions,
                });
            }
            let page_count = v
                .get("pageCount")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            if entities.is_empty() || page >= page_count {
                break;
            }
        }
        Ok(roles)
    }

    /// The home division and role ids, fetched (the home division, and the role catalog when
    /// `role_catalog` has none fresh) at most once per `AUTHZ_CATALOG_TTL`; the calls count in
    /// `tally`.
    pub async fn authz_catalog(
        &self,
        tally: &CallTally,
    ) -> Result<std::sync::Arc<AuthzCatalog>, ScimError> {
        let mut cached = self.authz_catalog.lock().await;
        if let Some((at, c)) = cached.as_ref()
            && at.elapsed() < AUTHZ_CATALOG_TTL
        {
            return Ok(c.clone());
        }
        let home_division = self.home_division(tally).await?;
        let role_ids = self.role_catalog(tally).await?.role_ids.clone();
        let c = std::sync::Arc::new(AuthzCatalog {
            home_division,
            role_ids,
        });
        *cached = Some((Instant::now(), c.clone()));
        Ok(c)
    }

    /// The org's role catalog, read (one call per 500 roles) at most once per
    /// `AUTHZ_CATALOG_TTL` by this process; the calls count in `tally`. A failed read is not
    /// kept: the next caller reads again.
    pub async fn role_catalog(
        &self,
        tally: &CallTally,
    ) -> Result<std::sync::Arc<RoleCatalog>, ScimError> {
        if let Some(c) = self.cached_role_catalog() {
            return Ok(c);
        }
        let _fetching = self.role_catalog_fetch.lock().await;
        // Another caller may have read it while this one waited.
        if let Some(c) = self.cached_role_catalog() {
            return Ok(c);
        }
        let roles = self.list_roles(tally).await?;
        let c = std::sync::Arc::new(RoleCatalog {
            names: roles.iter().map(|r| r.name.clone()).collect(),
            role_ids: roles
                .into_iter()
                .filter(|r| !r.id.is_empty())
                .map(|r| (r.name, r.id))
                .collect(),
            read_at: std::time::SystemTime::now(),
        });
        *self.role_catalog.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), c.clone()));
        Ok(c)
    }

    /// The role catalog if one was read within `AUTHZ_CATALOG_TTL`; never calls the target.
    pub fn cached_role_catalog(&self) -> Option<std::sync::Arc<RoleCatalog>> {
        self.role_catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < AUTHZ_CATALOG_TTL)
            .map(|(_, c)| c.clone())
    }

    /// The id of the org's home division (`GET /api/v2/authorization/divisions/home`).
    pub async fn home_division(&self, tally: &CallTally) -> Result<String, ScimError> {
        let a = self
            .get(
                "/authorization/divisions/home",
                format!("{}/api/v2/authorization/divisions/home", self.api_base),
                &[],
                tally,
            )
            .await?;
        let v: serde_json::Value = parse(&a.body)?;
        v.get("id")
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ScimError::Protocol("the home division has no id".into()))
    }

    /// One page of the grants made in a division
    /// (`GET /api/v2/authorization/divisions/{divisionId}/grants`): `(total, [(user id, role
    /// name)])`, users only (a grant to a group or an OAuth client is skipped).
    pub async fn division_grants(
        &self,
        division_id: &str,
        page_number: u64,
        page_size: u64,
        tally: &CallTally,
    ) -> Result<(u64, Vec<(String, String)>), ScimError> {
        let query = [
            ("pageSize", page_size.to_string()),
            ("pageNumber", page_number.to_string()),
        ];
        let a = self
            .get(
                "/authorization/divisions/{divisionId}/grants",
                format!(
                    "{}/api/v2/authorization/divisions/{}/grants",
                    self.api_base,
                    path_segment(division_id)
                ),
                &query,
                tally,
            )
            .await?;
        let v: serde_json::Value = parse(&a.body)?;
        let total = v
            .get("total")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ScimError::Protocol("a grants page without `total`".into()))?;
        let mut grants = Vec::new();
        for e in v
            .get("entities")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let subject = e.get("subjectId").and_then(|s| s.as_str());
            let role = e
                .get("role")
                .and_then(|r| r.get("name"))
                .and_then(|n| n.as_str());
            let kind = e.get("subjectType").and_then(|t| t.as_str());
            if let (Some(subject), Some(role)) = (subject, role)
                && kind.is_none_or(|k| k == "PC_USER")
            {
                grants.push((subject.to_owned(), role.to_owned()));
            }
        }
        Ok((total, grants))
    }
}
