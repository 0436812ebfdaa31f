//! `/v1/policy`: the policy in force.

use super::AppState;
use super::auth::{Caller, Scope};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

/// `GET /v1/policy`: license tiers, role catalog, SoD rules.
pub async fn get(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsRead)?;
    Ok(Json(state.policy.current().summary()))
}

/// `GET /v1/policy/roles/{name}`: a role with its inherited roles and effective permissions.
pub async fn role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::JobsRead)?;
    state
        .policy
        .current()
        .role_detail(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("role \"{name}\" is not in the policy")))
}
