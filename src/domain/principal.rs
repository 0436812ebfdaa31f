//! Who did something: the principal of a request, as jobs, audit events and log lines record it.

use super::PrincipalKind;
use serde::{Deserialize, Serialize};

/// The longest name, issuer or subject a principal keeps (a token's claims are bounded by the
/// token's size, but a record should not be).
pub const MAX_PRINCIPAL_FIELD: usize = 256;

/// An API key (its configured name), a token (issuer, subject and the name its claims give),
/// a console session (the same, from the ID token) or rolesync's own schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"kind": "token", "name": "hr-system", "issuer": "https://login.example.com", "subject": "0oa1b2c3"}))]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The key's name; the token's display name (`name`, else `client_id`/`azp`, else `sub`).
    pub name: String,
    /// The token's `iss`; absent for a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub issuer: Option<String>,
    /// The token's `sub`; absent for a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub subject: Option<String>,
}

impl Principal {
    pub fn api_key(name: &str) -> Principal {
        Principal {
            kind: PrincipalKind::ApiKey,
            name: bounded(name),
            issuer: None,
            subject: None,
        }
    }

    pub fn token(kind: PrincipalKind, issuer: &str, subject: &str, name: &str) -> Principal {
        Principal {
            kind,
            name: bounded(name),
            issuer: Some(bounded(issuer)),
            subject: Some(bounded(subject)),
        }
    }

    pub fn system(name: &str) -> Principal {
        Principal {
            kind: PrincipalKind::System,
            name: bounded(name),
            issuer: None,
            subject: None,
        }
    }

    /// One line for logs and pages: `api_key:hr`, `token:hr-system (https://idp#0oa1)`.
    pub fn label(&self) -> String {
        match (&self.issuer, &self.subject) {
            (Some(i), Some(s)) => format!("{}:{} ({i}#{s})", self.kind, self.name),
            _ => format!("{}:{}", self.kind, self.name),
        }
    }

    /// Per-principal buckets (upload slots, idempotency keys): a key by its name, a token by
    /// its issuer and subject.
    pub fn bucket(&self) -> String {
        match (&self.issuer, &self.subject) {
            (Some(i), Some(s)) => format!("{i}\u{1f}{s}"),
            _ => self.name.clone(),
        }
    }

    /// As stored in a job's `submitted_by`, `approved_by`, `cancelled_by` (JSON text).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Principal> {
        serde_json::from_str(text).ok()
    }
}

/// At most `MAX_PRINCIPAL_FIELD` bytes, cut on a character boundary.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_PRINCIPAL_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_PRINCIPAL_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_round_trips_and_is_bounded() {
        let p = Principal::token(
            PrincipalKind::Token,
            "https://idp",
            "sub-1",
            &"é".repeat(300),
        );
        assert!(p.name.len() <= MAX_PRINCIPAL_FIELD);
        assert_eq!(Principal::from_json(&p.to_json()), Some(p.clone()));
        assert_eq!(Principal::api_key("hr").label(), "api_key:hr");
        assert_eq!(
            Principal::api_key("hr").to_json(),
            r#"{"kind":"api_key","name":"hr"}"#
        );
        assert!(p.label().starts_with("token:"));
    }
}
