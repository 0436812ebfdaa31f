//! The policy against the target org's role catalog: which roles the policy can write that the
//! org lacks (every write naming one would be refused), and which org roles the policy does not
//! manage (rolesync never removes those). Pure: the catalog is read elsewhere
//! (`ScimClient::role_catalog`, `doctor`).

use super::{Policy, RoleSet};
use std::collections::BTreeSet;

/// The difference between a policy and an org's roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OrgDiff {
    /// Policy roles the org does not have by that exact (case-sensitive) name, sorted.
    pub missing_from_org: Vec<String>,
    /// Org roles the policy does not manage, sorted.
    pub unmanaged: Vec<String>,
}

/// Compares the roles the policy can write (its catalog) with the org's role names.
pub fn diff(policy: &Policy, org: &BTreeSet<String>) -> OrgDiff {
    let managed: RoleSet = policy.roles().iter().map(|r| r.name.clone()).collect();
    diff_names(&managed, policy.protected_roles(), org)
}

/// `diff` over names: the policy's catalog (`managed`), its protected roles (never written,
/// never reported as unmanaged) and the org's roles.
pub fn diff_names(managed: &RoleSet, protected: &RoleSet, org: &BTreeSet<String>) -> OrgDiff {
    OrgDiff {
        missing_from_org: managed.difference(org).cloned().collect(),
        unmanaged: org
            .difference(managed)
            .filter(|r| !protected.contains(*r))
            .cloned()
            .collect(),
    }
}

/// An org role whose name differs from `name` only in case or spacing: the likely fix of a
/// policy role the org lacks.
pub fn near_match<'a>(name: &str, org: &'a BTreeSet<String>) -> Option<&'a str> {
    let key = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let wanted = key(name);
    org.iter().map(String::as_str).find(|o| key(o) == wanted)
}

/// The roles a row naming `role_template` would push (the role with its ancestors when the
/// policy expands them) that are in `missing`; empty when the org has them all.
pub fn missing_for(policy: &Policy, role_template: &str, missing: &RoleSet) -> Vec<String> {
    let one: RoleSet = [role_template.to_owned()].into_iter().collect();
    policy.expand(&one).intersection(missing).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_toml_str(include_str!("../../config/policy.toml")).unwrap_or_else(|e| {
            panic!("the shipped policy loads: {e}");
        })
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_diff_names_roles_missing_from_the_org_and_roles_not_managed() {
        let org = set(&[
            "Employee",
            "Agent",
            "queue member",
            "Wrap Up",
            "Reporting",
            "Supervisor",
            "System Administrator",
            "Reporting Auditor",
            "Master Admin",
        ]);
        let d = diff(&policy(), &org);
        assert_eq!(d.missing_from_org, vec!["Queue Member"]);
        // Employee is protected: it is the policy's business, not an unmanaged role.
        assert_eq!(d.unmanaged, vec!["Master Admin", "queue member"]);
        assert_eq!(near_match("Queue Member", &org), Some("queue member"));
        assert_eq!(near_match("Astronaut", &org), None);
    }

    #[test]
    fn a_row_misses_what_its_expansion_misses() {
        let p = policy();
        let missing = set(&["Agent"]);
        // Supervisor inherits Agent (through expand_inherited), so a Supervisor row needs it.
        assert_eq!(missing_for(&p, "Supervisor", &missing), vec!["Agent"]);
        assert_eq!(missing_for(&p, "Reporting", &missing), Vec::<String>::new());
        assert_eq!(missing_for(&p, "Agent", &missing), vec!["Agent"]);
    }
}
