//! The permissions the Authorization endpoints need (Genesys swagger, `x-inin-requires-permissions`),
//! and the check: the OAuth client holds every permission unless the fault
//! `missing_permissions` withholds some.

use axum::http::StatusCode;

use crate::Shared;
use crate::errors::ApiError;

pub const ROLE_VIEW: &str = "authorization:role:view";
pub const GRANT_ADD: &str = "authorization:grant:add";
pub const GRANT_DELETE: &str = "authorization:grant:delete";
pub const GRANT_VIEW: &str = "authorization:grant:view";
/// Every audit query endpoint (AuditApi).
pub const AUDIT_VIEW: &str = "audits:audit:view";

/// 403 `missing.permissions` unless the OAuth client holds `permission` (see the fault
/// `missing_permissions`).
pub fn require(shared: &Shared, permission: &str) -> Result<(), ApiError> {
    if shared.faults.has_permission(permission) {
        Ok(())
    } else {
        Err(ApiError::genesys(
            StatusCode::FORBIDDEN,
            "missing.permissions",
            format!(
                "Unable to perform the requested action. You are missing the following permission(s): [{permission}]"
            ),
        ))
    }
}
