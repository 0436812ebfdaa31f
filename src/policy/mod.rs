//! The access policy (SPEC §4, `policy.file`): license tiers, the role catalog with inheritance,
//! separation-of-duties rules and approval thresholds.
//!
//! INTERFACE CONTRACT (the pipeline and the HTTP API depend on these names; the policy module may
//! add more but must keep these):
//! - `Policy::load(path) -> Result<Policy, PolicyError>` and `Policy::from_toml_str(&str)`;
//!   `PolicyError` lists every problem found, each naming what is wrong.
//! - `Policy` is immutable once loaded and shared as `Arc<Policy>`; memoisation uses interior
//!   mutability and is safe across threads.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// A set of Genesys role names, ordered so that equal sets compare and hash equal.
pub type RoleSet = BTreeSet<String>;

/// Effective permissions, `domain:entity:action` strings (may contain `*`).
pub type PermissionSet = BTreeSet<String>;

#[derive(Debug, thiserror::Error)]
#[error("invalid policy: {}", problems.join("; "))]
pub struct PolicyError {
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Tier {
    pub name: String,
    pub roles: RoleSet,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Role {
    pub name: String,
    pub inherits: Vec<String>,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SodRule {
    pub name: String,
    pub roles: RoleSet,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Approval {
    pub max_removal_fraction: f64,
    pub max_removed_users: u64,
}

#[derive(Debug)]
pub struct Policy {
    _private: (),
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let _ = path;
        Err(PolicyError { problems: vec!["not built yet".into()] })
    }

    pub fn from_toml_str(s: &str) -> Result<Policy, PolicyError> {
        let _ = s;
        Err(PolicyError { problems: vec!["not built yet".into()] })
    }

    pub fn expand_inherited(&self) -> bool {
        true
    }

    /// Roles never removed, whatever the mode (`Employee`).
    pub fn protected_roles(&self) -> &RoleSet {
        unreachable_set()
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        let _ = name;
        None
    }

    pub fn tiers(&self) -> Vec<&Tier> {
        Vec::new()
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        let _ = name;
        None
    }

    pub fn roles(&self) -> Vec<&Role> {
        Vec::new()
    }

    pub fn sod_rules(&self) -> &[SodRule] {
        &[]
    }

    pub fn approval(&self) -> &Approval {
        unimplemented_approval()
    }

    /// True when the role is in the catalog: only managed roles are ever removed by `replace`.
    pub fn is_managed(&self, role: &str) -> bool {
        self.role(role).is_some()
    }

    /// The role and all its ancestors (transitively), including itself.
    pub fn closure(&self, role: &str) -> RoleSet {
        let _ = role;
        RoleSet::new()
    }

    /// The roles to push for a desired set: with every ancestor when `expand_inherited`,
    /// otherwise the set itself.
    pub fn expand(&self, roles: &RoleSet) -> RoleSet {
        roles.clone()
    }

    /// Roles of `roles` (closed under inheritance) that `tier` does not allow. Roles outside the
    /// catalog (granted by hand in Genesys) and protected roles are never reported.
    pub fn not_entitled(&self, tier: &Tier, roles: &RoleSet) -> Vec<String> {
        let _ = (tier, roles);
        Vec::new()
    }

    /// The first SoD rule whose roles are all in `final_roles` (closed under inheritance).
    pub fn sod_violation(&self, final_roles: &RoleSet) -> Option<&SodRule> {
        let _ = final_roles;
        None
    }

    /// Union of the permissions of every role in the set and of their ancestors. Memoised per
    /// distinct set.
    pub fn effective_permissions(&self, roles: &RoleSet) -> Arc<PermissionSet> {
        let _ = roles;
        Arc::new(PermissionSet::new())
    }
}

fn unreachable_set() -> &'static RoleSet {
    static EMPTY: std::sync::OnceLock<RoleSet> = std::sync::OnceLock::new();
    EMPTY.get_or_init(RoleSet::new)
}

fn unimplemented_approval() -> &'static Approval {
    static A: Approval = Approval { max_removal_fraction: 1.0, max_removed_users: u64::MAX };
    &A
}
