//! The redaction of `sandbox-check`'s trace (pure). A trace recorded in a real org is meant to
//! be sent back and replayed as a test, so it must name no person and no org, yet stay
//! replayable. Rules, in order, for every JSON string (request and response bodies alike):
//!
//! 1. a **known value** is replaced by its placeholder wherever it appears (whole or inside a
//!    longer string such as a path, a filter or a message): the test user's id `<user-1>`,
//!    externalId `<external-id-1>`, userName `<email-1>`, displayName `<name-1>`, the home
//!    division's id `<division-home>`, a role id `<role-NAME>`, the random id of the bad-id
//!    probe `<unknown-id-1>`. These are the placeholders the replayer resolves.
//! 2. a **role name of the catalog** stays as it is (roles are the subject of the check, and a
//!    catalog's names are the org's configuration, not people).
//! 3. the string of a **vocabulary key** (`schemas`, `code`, `scimType`, `status`, `op`,
//!    `path`, `resourceType`, `type`, `version`, dates, `message`, `detail`, the audit query's
//!    `interval`, `serviceName`, `entityType`, `action`, …) stays, with rule 1 applied inside
//!    it; so does the value `Timestamp` (the audit query's sort key). Free text (`message`, `detail`) may still name something the org
//!    holds that is not a known value: read the trace before sending it.
//! 4. any other string: an id (`id`, `subjectId`) becomes `<user-N>` (N ≥ 2, stable per value),
//!    an e-mail address `<email-N>`, anything else `<text-N>`.
//!
//! Numbers, booleans and keys are kept: the replayer compares shapes.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Keys whose string values are vocabulary, not data.
const VOCABULARY_KEYS: &[&str] = &[
    "schemas",
    "resourceType",
    "code",
    "scimType",
    "status",
    "op",
    "path",
    "type",
    "subjectType",
    "version",
    "created",
    "lastModified",
    "grantMadeAt",
    "message",
    "detail",
    "messageWithParams",
    "entityName",
    "domain",
    "actionSet",
    // The audit query and its messages.
    "interval",
    "serviceName",
    "sortOrder",
    "property",
    "entityType",
    "action",
    "level",
    "eventDate",
    "localizableMessageCode",
    "via",
];

/// Values that are vocabulary wherever they appear (the audit query's sort key).
const VOCABULARY_VALUES: &[&str] = &["Timestamp"];

#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Known value → placeholder; applied longest value first.
    known: Vec<(String, String)>,
    roles: BTreeSet<String>,
    /// Other values met, with their placeholders (stable within a trace).
    others: BTreeMap<String, String>,
    users: usize,
    emails: usize,
    texts: usize,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor {
            users: 1,
            emails: 1,
            ..Default::default()
        }
    }

    /// Registers a known value (empty values are ignored).
    pub fn know(&mut self, value: &str, placeholder: impl Into<String>) {
        if value.is_empty() || self.known.iter().any(|(v, _)| v == value) {
            return;
        }
        self.known.push((value.to_owned(), placeholder.into()));
        self.known.sort_by_key(|k| std::cmp::Reverse(k.0.len()));
    }

    /// A role of the catalog: its name stays readable, its id becomes `<role-NAME>`.
    pub fn role(&mut self, id: &str, name: &str) {
        self.roles.insert(name.to_owned());
        self.know(id, format!("<role-{name}>"));
    }

    /// Rule 1 on a string: every known value inside it replaced.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (value, placeholder) in &self.known {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), placeholder);
            }
        }
        out
    }

    /// The redacted copy of a JSON value.
    pub fn json(&mut self, v: &Value) -> Value {
        self.value(None, v)
    }

    fn value(&mut self, key: Option<&str>, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(key, s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(key, i)).collect()),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.value(Some(k), v));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    fn string(&mut self, key: Option<&str>, s: &str) -> String {
        if let Some((_, p)) = self.known.iter().find(|(v, _)| v == s) {
            return p.clone();
        }
        if self.roles.contains(s)
            || VOCABULARY_VALUES.contains(&s)
            || key.is_some_and(|k| VOCABULARY_KEYS.contains(&k))
        {
            return self.text(s);
        }
        if let Some(p) = self.others.get(s) {
            return p.clone();
        }
        let placeholder = if matches!(key, Some("id" | "subjectId")) {
            self.users += 1;
            format!("<user-{}>", self.users)
        } else if s.contains('@') {
            self.emails += 1;
            format!("<email-{}>", self.emails)
        } else {
            self.texts += 1;
            format!("<text-{}>", self.texts)
        };
        self.others.insert(s.to_owned(), placeholder.clone());
        placeholder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_values_become_placeholders_and_role_names_stay() {
        let mut r = Redactor::new();
        r.know("u-123", "<user-1>");
        r.know("jane@example.com", "<email-1>");
        r.role("r-9", "Agent");
        let out = r.json(&json!({
            "id": "u-123", "userName": "jane@example.com", "roles": [{"value": "Agent"}],
            "meta": {"location": "https://api.example/users/u-123", "version": "4"},
            "detail": "user u-123 conflict", "other": {"id": "u-777"}, "displayName": "Jane"
        }));
        assert_eq!(out["id"], "<user-1>");
        assert_eq!(out["userName"], "<email-1>");
        assert_eq!(out["roles"][0]["value"], "Agent");
        assert_eq!(out["meta"]["version"], "4");
        assert_eq!(out["detail"], "user <user-1> conflict");
        assert_eq!(out["other"]["id"], "<user-2>");
        assert!(
            out["displayName"]
                .as_str()
                .is_some_and(|s| s.starts_with("<text-"))
        );
        assert!(
            out["meta"]["location"]
                .as_str()
                .is_some_and(|s| s.starts_with("<text-"))
        );
        assert_eq!(
            r.text("/roles/r-9/users/remove"),
            "/roles/<role-Agent>/users/remove"
        );
    }
}
