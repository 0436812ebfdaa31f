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
    let mut summary = state.policy.current().summary();
    if let Some(obj) = summary.as_object_mut() {
        obj.insert(
            "fingerprint".into(),
            Value::String(state.policy.current().fingerprint()),
        );
        if let Some(notes) = state.policy.import_notes() {
            obj.insert(
                "import".into(),
                serde_json::json!({"from_target": true, "notes": notes}),
            );
        }
        if let Some(e) = state.policy.last_error() {
            obj.insert("reload_error".into(), Value::String(e));
        }
    }
    Ok(Json(summary))
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
