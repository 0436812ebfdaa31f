//! Wire types of the SCIM API as rolesync uses them.

use serde::{Deserialize, Serialize};

pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A user as read from the target: only what the sync needs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScimUser {
    pub id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleRef>,
    #[serde(default)]
    pub meta: Option<Meta>,
    /// The ETag as the target sent it (header or `meta.version`), for `If-Match`.
    #[serde(skip)]
    pub etag: Option<String>,
}

impl ScimUser {
    pub fn role_names(&self) -> std::collections::BTreeSet<String> {
        self.roles.iter().map(|r| r.value.clone()).collect()
    }

    /// The ETag to send in `If-Match`: the header's, else `meta.version`.
    pub fn version(&self) -> Option<String> {
        self.etag
            .clone()
            .or_else(|| self.meta.as_ref().and_then(|m| m.version.clone()))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct RoleRef {
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    #[serde(default)]
    pub total_results: u64,
    #[serde(default, rename = "Resources")]
    pub resources: Vec<ScimUser>,
}

/// The two error shapes: SCIM (`status` as a string, `scimType`, `detail`) and Genesys
/// (`code`, `message`, `status` as a number).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub scim_type: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorBody {
    pub fn parse(bytes: &[u8]) -> ErrorBody {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        let main = self
            .detail
            .clone()
            .or_else(|| self.message.clone())
            .unwrap_or_default();
        match (&self.scim_type, &self.code) {
            (Some(t), _) => format!("{main} (scimType {t})"),
            (None, Some(c)) => format!("{main} (code {c})"),
            _ => main,
        }
    }
}

/// Escapes a value for a quoted SCIM filter string (RFC 7644 §3.4.2.2 uses JSON string
/// syntax): `\` and `"` are escaped, so `x" or userName pr "` stays one literal.
pub fn escape_filter_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_escape_quotes_and_backslashes() {
        assert_eq!(escape_filter_value("EMP-1"), "EMP-1");
        assert_eq!(
            escape_filter_value(r#"x" or userName pr ""#),
            r#"x\" or userName pr \""#
        );
        assert_eq!(escape_filter_value(r"a\b"), r"a\\b");
    }

    #[test]
    fn error_bodies_of_both_shapes_are_read() {
        let scim = ErrorBody::parse(
            br#"{"schemas":[],"status":"400","scimType":"invalidVers","detail":"stale"}"#,
        );
        assert_eq!(scim.scim_type.as_deref(), Some("invalidVers"));
        let genesys =
            ErrorBody::parse(br#"{"message":"nope","code":"missing.permissions","status":403}"#);
        assert_eq!(genesys.code.as_deref(), Some("missing.permissions"));
        assert!(genesys.text().contains("missing.permissions"));
    }
}
