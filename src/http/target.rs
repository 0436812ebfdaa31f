//! `/v1/target/check`: `rolesync doctor` over HTTP, against the target and policy this
//! service runs with.

use super::AppState;
use super::auth::{Caller, Scope};
use crate::doctor::Report;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;

/// One check at a time per process: each costs the target a few calls, and callers arriving
/// meanwhile wait for their own run rather than multiplying them.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Preflight of the configured target
///
/// The checks of `rolesync doctor`, made now: the token grant and its lifetime, SCIM and its
/// `ServiceProviderConfig`, every policy role in the org by its exact name (and the org roles
/// the policy does not manage), the home division, the read permissions the enabled paths
/// need (write permissions cannot be probed without writing: always `unknown`), the rate-limit
/// headers against `target.requests_per_minute`, and the clock against the target's `Date`.
/// Each check is `pass`, `fail` or `unknown` with its fix in one sentence; `calls` counts the
/// calls made to the target (at most 9, whatever the org's size, made once without retry).
/// Always 200 when the checks ran, whatever they found. Scope `admin`.
#[utoipa::path(
    get,
    path = "/v1/target/check",
    operation_id = "checkTarget",
    tag = "target",
    responses(
        (status = 200, description = "The checks, in order, and the calls they cost", body = Report),
        (status = 403, description = "The key lacks `admin`"),
    )
)]
pub async fn check(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Report>> {
    caller.require(Scope::Admin)?;
    let _one = RUNNING.lock().await;
    let policy = state.policy.current();
    Ok(Json(crate::doctor::run(&state.settings, &policy).await))
}
