//! `/v1/policy`: the policy in force.

use super::AppState;
use super::auth::{Caller, Scope};
use crate::error::{ApiError, ApiResult};
use crate::policy::{PolicyImport, PolicySummary, RoleDetail};
use axum::Json;
use axum::extract::{Path, State};

/// License tiers, role catalog, SoD rules
///
/// The policy in force: tiers, roles with their inheritance and permissions, separation-of-duties
/// rules, protected and privileged roles, approval bounds and the fingerprint jobs record. After
/// a failed reload of the policy file, `reload_error` says why and the previous policy stays in
/// force. Scope `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/policy",
    operation_id = "getPolicy",
    tag = "policy",
    responses(
        (status = 200, description = "The policy in force", body = PolicySummary),
        (status = 403, description = "The key lacks `jobs:read`"),
    )
)]
pub async fn get(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<PolicySummary>> {
    caller.require(Scope::JobsRead)?;
    let policy = state.policy.current();
    let mut summary = policy.summary();
    summary.import = state.policy.import_notes().map(|notes| PolicyImport {
        from_target: true,
        notes,
    });
    summary.reload_error = state.policy.last_error();
    Ok(Json(summary))
}

/// A role with its inherited roles and effective permissions
///
/// The role's direct parents and all its ancestors, its own and its effective permissions, the
/// tiers allowing it, the SoD rules naming it, and whether it is privileged. Scope `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/policy/roles/{name}",
    operation_id = "getRole",
    tag = "policy",
    params(("name" = String, Path, description = "The role's name, as in the catalog", example = "Supervisor")),
    responses(
        (status = 200, description = "The role", body = RoleDetail),
        (status = 400, description = "The name is not valid UTF-8 once decoded"),
        (status = 403, description = "The key lacks `jobs:read`"),
        (status = 404, description = "No such role in the policy (protected roles that are not in the catalog included)"),
    )
)]
pub async fn role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RoleDetail>> {
    caller.require(Scope::JobsRead)?;
    state
        .policy
        .current()
        .role_detail(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("role \"{name}\" is not in the policy")))
}
