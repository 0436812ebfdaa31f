use serde::{Deserialize, Serialize};
use std::fmt;

vocabulary! {
    /// How a job's desired roles meet the roles a user holds.
    #[derive(Default)]
    pub enum Mode {
        /// final = current ∪ desired
        #[default]
        Merge = "merge",
        /// final = desired ∪ protected ∪ roles the policy does not manage
        Replace = "replace",
    }
}

vocabulary! {
    /// What a row asks for its user. A closed list: any other word is the row's rejection.
    #[derive(Default)]
    pub enum Action {
        /// The row's `role_template` (with the roles it inherits) is one of the roles the user
        /// is to hold: the batch's mode says what happens to the others.
        #[default]
        Assign = "assign",
        /// A leaver: the user keeps no role the policy manages, whatever the batch's mode.
        /// Protected roles (`Employee`) and roles the policy does not manage stay. The row
        /// needs only `external_id`; its `role_template` and `license_tier` are ignored.
        Revoke = "revoke",
    }
}

vocabulary! {
    /// Whether a batch is the whole list of managed users (`full`): then a managed user (one
    /// with a desired state) it does not name is a leaver, given a `revoke` row by the store.
    #[derive(Default)]
    pub enum Roster {
        /// The batch changes the users it names, nobody else (the default).
        #[default]
        Partial = "partial",
        /// The batch names every managed user; the others are leavers.
        Full = "full",
    }
}

/// One submitted row, as the HR system sent it. Fields are kept verbatim (trimmed) so that
/// the per-row result can echo them; validation against the policy happens in the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// 1-based row of the submitted body (CSV: the header is line 1).
    pub line: u64,
    pub external_id: String,
    pub role_template: String,
    pub license_tier: String,
    /// `assign` unless the row says `revoke`.
    #[serde(default)]
    pub action: Action,
    /// `effective_at` (RFC 3339), in ms since the epoch: not applied before then (a future
    /// hire, a leaver's last day). None: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at_ms: Option<i64>,
    /// Set when the row could not be read whole (e.g. a CSV row with too few fields): the row
    /// is stored as rejected with this reason, and the rest of the batch goes on.
    #[serde(skip)]
    pub defect: Option<String>,
}

/// An HR identifier that is safe to look up: non-empty, at most 256 characters, no control
/// characters. Quotes and backslashes are allowed; they are escaped when put in a SCIM filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExternalId(String);

impl ExternalId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<ExternalId, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            return Err("external_id is empty");
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err("external_id is longer than 256 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("external_id contains a control character");
        }
        Ok(ExternalId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ExternalId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_id_rejects_empty_and_control_characters() {
        assert!(ExternalId::parse("  ").is_err());
        assert!(ExternalId::parse("a\nb").is_err());
        assert!(ExternalId::parse(&"x".repeat(257)).is_err());
        assert_eq!(
            ExternalId::parse(" EMP-1 ").map(|e| e.0),
            Ok("EMP-1".to_owned())
        );
        assert!(ExternalId::parse(r#"x" or userName pr ""#).is_ok());
    }
}
