//! The access policy (`policy.file`): license tiers, the role catalog with inheritance,
//! separation-of-duties rules and approval thresholds, and the rule that decides the role set a
//! user ends with (`Policy::final_roles`).
//!
//! INTERFACE CONTRACT (the pipeline and the HTTP API depend on these names; the policy module may
//! add more but must keep these):
//! - `Policy::load(path) -> Result<Policy, PolicyError>` and `Policy::from_toml_str(&str)`;
//!   `PolicyError` lists every problem found, each naming what is wrong.
//! - `Policy` is immutable once loaded and shared as `Arc<Policy>`; memoisation uses interior
//!   mutability and is safe across threads.
//!
//!
//! Additions beyond the contract: `Policy::{fingerprint, summary, role_detail, ancestors,
//! merge_imported_catalog, final_roles}`, `RoleChange`, `ImportedRole` (with
//! `from_permission_policies`), `PermissionPolicy`, the free functions `permission_matches`,
//! `permission_diff`, `validate_permission`, and `check_report` for `rolesync policy check`.
//!
//! Layout: `load` parses and validates the file, `resolve` answers the per-user questions
//! (closure, entitlement, SoD, effective permissions) from tables precomputed at load, `check`
//! renders the `rolesync policy check` report.
//!
//! Genesys Cloud has no role inheritance: `inherits` exists only here, and every question about a
//! set of roles is answered on the set *closed under inheritance* (the roles plus all their
//! ancestors), because that is what a user ends up holding once the hierarchy is flattened.

mod check;
pub mod live;
mod load;
pub mod org;
mod resolve;

use crate::domain::Mode;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

pub use check::check_report;
pub use resolve::{permission_diff, permission_matches, validate_permission};

/// A set of Genesys role names, ordered so that equal sets compare and hash equal.
pub type RoleSet = BTreeSet<String>;

/// Effective permissions, `domain:entity:action` strings (may contain `*`).
pub type PermissionSet = BTreeSet<String>;

/// A user's roles before and after a change, with the two differences computed once, here.
///
/// Invariant: `added` is exactly `after − before` and `removed` exactly `before − after`, both
/// sorted; the change is empty exactly when `before == after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleChange {
    pub(crate) before: RoleSet,
    pub(crate) after: RoleSet,
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
}

impl RoleChange {
    pub(crate) fn new(before: RoleSet, after: RoleSet) -> RoleChange {
        let added = after.difference(&before).cloned().collect();
        let removed = before.difference(&after).cloned().collect();
        RoleChange {
            before,
            after,
            added,
            removed,
        }
    }

    /// True when nothing would change.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The policy file could not be loaded; `problems` lists every problem found, one sentence each,
/// in document order (a TOML syntax or schema error stops the parse, so it comes alone).
#[derive(Debug, thiserror::Error)]
#[error("invalid policy: {}", problems.join("; "))]
pub struct PolicyError {
    /// One human-readable sentence per problem, naming the offending role, tier, rule or key.
    pub problems: Vec<String>,
}

/// The policy in force, as `GET /v1/policy` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Policy)]
pub(crate) struct PolicySummary {
    /// Changes exactly when the effective policy does; a job records the one it was judged
    /// against (`policy_fingerprint`).
    pub fingerprint: String,
    /// Whether a role is written to the target together with the roles it inherits.
    pub expand_inherited: bool,
    /// Roles never removed, whatever the mode.
    pub protected_roles: RoleSet,
    pub tiers: Vec<Tier>,
    pub roles: Vec<Role>,
    pub sod: Vec<SodRule>,
    /// Roles whose grant waits for approval unless the key carries `roles:privileged`.
    pub privileged_roles: RoleSet,
    pub approval: Approval,
    /// Set when the role catalog's permissions were imported from the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub import: Option<PolicyImport>,
    /// The last reload of the policy file failed: this policy (the previous one) stays in
    /// force until the file is fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub reload_error: Option<String>,
}

/// What importing the target's role catalog reported.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PolicyImport {
    pub from_target: bool,
    /// Roles of the policy missing in the target, imported permissions skipped.
    pub notes: Vec<String>,
}

/// One role as `GET /v1/policy/roles/{name}` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct RoleDetail {
    pub name: String,
    /// Direct parents, in file order.
    pub inherits: Vec<String>,
    /// Every role it inherits, directly or not (itself excluded).
    pub ancestors: RoleSet,
    /// Its own permissions.
    pub permissions: Vec<String>,
    /// The permissions of the role with its ancestors, normalised.
    pub effective_permissions: PermissionSet,
    /// The tiers allowing it, in file order.
    pub tiers: Vec<String>,
    /// The separation-of-duties rules naming it.
    pub sod: Vec<SodRule>,
    /// It is, or inherits, one of the policy's privileged roles.
    pub privileged: bool,
}

/// A license tier: the catalog roles a user on that license may hold.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Tier {
    /// Tier name, as sent in `license_tier`.
    pub name: String,
    /// Roles the tier allows (protected roles need not be listed).
    pub roles: RoleSet,
}

/// A catalog role, named as in Genesys Cloud.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Role {
    /// The Genesys role name.
    pub name: String,
    /// Direct parents, in file order (rolesync's own hierarchy; Genesys has none).
    pub inherits: Vec<String>,
    /// The role's own permissions, `domain:entity:action`, in file (or import) order.
    pub permissions: Vec<String>,
}

/// A separation-of-duties rule: no user may end up holding all of `roles`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SodRule {
    /// Rule name, reported with `sod_conflict`.
    pub name: String,
    /// At least two catalog roles that must not be held together.
    pub roles: RoleSet,
    /// Why, for the person reading the rejection.
    pub reason: String,
}

impl SodRule {
    /// How a `sod_conflict` rejection names the rule.
    pub(crate) fn conflict_message(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(String::as_str).collect();
        format!(
            "separation of duties \"{}\": {} ({})",
            self.name,
            roles.join(" + "),
            self.reason
        )
    }
}

/// Thresholds above which a `replace` job waits for approval.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ApprovalBounds)]
pub(crate) struct Approval {
    /// Fraction (0..=1) of the org's users (as the target counts them) losing a role above
    /// which a `replace` job is held for approval.
    pub max_removal_fraction: f64,
    /// Number of users losing a role above which a `replace` job is held for approval.
    pub max_removed_users: u64,
}

/// A role as the Genesys role catalog (`GET /api/v2/authorization/roles`) describes it, with its
/// `permissionPolicies` flattened to `domain:entityName:action` strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportedRole {
    /// The Genesys role name.
    pub name: String,
    /// Flattened permission policies, `domain:entityName:action`.
    pub permissions: Vec<String>,
}

/// One entry of a Genesys role's `permissionPolicies` (`GET /api/v2/authorization/roles`);
/// the other fields Genesys sends (ids, conditions) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionPolicy {
    /// e.g. `routing`.
    pub domain: String,
    /// e.g. `queue`, or `*`.
    pub entity_name: String,
    /// e.g. `["view", "edit"]`, or `["*"]`.
    #[serde(default)]
    pub action_set: Vec<String>,
}

impl ImportedRole {
    /// Flattens a Genesys role's permission policies into `domain:entityName:action` strings,
    /// one per action, without duplicates, in the order Genesys listed them.
    pub fn from_permission_policies(
        name: impl Into<String>,
        policies: &[PermissionPolicy],
    ) -> Self {
        let mut permissions: Vec<String> = Vec::new();
        for policy in policies {
            for action in &policy.action_set {
                let perm = format!("{}:{}:{action}", policy.domain, policy.entity_name);
                if !permissions.contains(&perm) {
                    permissions.push(perm);
                }
            }
        }
        ImportedRole {
            name: name.into(),
            permissions,
        }
    }
}

/// A loaded, validated policy. Immutable once built; share it as `Arc<Policy>`.
///
/// Invariants established by `load::parse` and relied upon everywhere else: role, tier and SoD
/// names are unique; every parent, tier role and SoD role names a catalog role (tiers may also
/// name protected roles); the inheritance graph is acyclic; every permission is well formed.
pub struct Policy {
    expand_inherited: bool,
    protected_roles: RoleSet,
    tiers: Vec<Tier>,
    tier_index: HashMap<String, usize>,
    roles: Vec<Role>,
    sod: Vec<SodRule>,
    /// Roles whose grant needs a second look (`privileged_roles`): a job granting one waits
    /// for approval unless its key carries `roles:privileged`.
    privileged: RoleSet,
    approval: Approval,
    fingerprint: String,
    resolver: resolve::Resolver,
}

impl std::fmt::Debug for Policy {
    // The resolver tables and the memo can be large; a summary is what a log line needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("fingerprint", &self.fingerprint)
            .field("expand_inherited", &self.expand_inherited)
            .field("protected_roles", &self.protected_roles)
            .field("tiers", &self.tiers.len())
            .field("roles", &self.roles.len())
            .field("sod", &self.sod.len())
            .field("approval", &self.approval)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Reads and validates the policy file at `path`. An unreadable file is reported as a
    /// single problem naming the path.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            problems: vec![format!(
                "cannot read policy file \"{}\": {e}",
                path.display()
            )],
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates a policy from TOML text, collecting every problem found.
    pub fn from_toml_str(s: &str) -> Result<Policy, PolicyError> {
        load::parse(s)
    }

    /// Whether inherited roles are pushed to Genesys too (default true).
    pub(crate) fn expand_inherited(&self) -> bool {
        self.expand_inherited
    }

    /// Roles never removed, whatever the mode (`Employee`).
    pub(crate) fn protected_roles(&self) -> &RoleSet {
        &self.protected_roles
    }

    /// The tier called `name`, if any.
    pub(crate) fn tier(&self, name: &str) -> Option<&Tier> {
        self.tier_index.get(name).and_then(|&i| self.tiers.get(i))
    }

    /// Every tier, in file order.
    pub(crate) fn tiers(&self) -> Vec<&Tier> {
        self.tiers.iter().collect()
    }

    /// The catalog role called `name`, if any.
    pub(crate) fn role(&self, name: &str) -> Option<&Role> {
        self.resolver.index_of(name).and_then(|i| self.roles.get(i))
    }

    /// Every catalog role, in file order.
    pub fn roles(&self) -> Vec<&Role> {
        self.roles.iter().collect()
    }

    /// Every SoD rule, in file order (`sod_violation` reports the first that matches).
    pub(crate) fn sod_rules(&self) -> &[SodRule] {
        &self.sod
    }

    /// Approval thresholds for `replace` jobs.
    pub(crate) fn approval(&self) -> &Approval {
        &self.approval
    }

    /// Hex SHA-256 of the policy source text, so a job can record which policy it ran with.
    /// For a policy returned by `merge_imported_catalog` it also covers the imported
    /// permissions (see there).
    pub(crate) fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// True when the role is in the catalog: only managed roles are ever removed by `replace`.
    pub(crate) fn is_managed(&self, role: &str) -> bool {
        self.role(role).is_some()
    }

    /// The role and all its ancestors (transitively), including itself. A role outside the
    /// catalog has no known ancestors: its closure is just itself.
    pub fn closure(&self, role: &str) -> RoleSet {
        self.resolver.closure_names(role)
    }

    /// The role's ancestors (transitively), excluding itself; empty outside the catalog.
    pub(crate) fn ancestors(&self, role: &str) -> RoleSet {
        let mut set = self.closure(role);
        set.remove(role);
        set
    }

    /// The roles to push for a desired set: with every ancestor when `expand_inherited`,
    /// otherwise the set itself. Roles outside the catalog pass through unchanged.
    pub(crate) fn expand(&self, roles: &RoleSet) -> RoleSet {
        if self.expand_inherited {
            self.resolver.close(roles)
        } else {
            roles.clone()
        }
    }

    /// Roles of `roles` (closed under inheritance) that `tier` does not allow, sorted. Roles
    /// outside the catalog (granted by hand in Genesys) and protected roles are never reported.
    ///
    /// The set is closed even when `expand_inherited` is false: holding a role means holding
    /// what it inherits, and a tier must not be a way around that.
    pub(crate) fn not_entitled(&self, tier: &Tier, roles: &RoleSet) -> Vec<String> {
        self.resolver
            .close(roles)
            .into_iter()
            .filter(|r| {
                self.is_managed(r) && !self.protected_roles.contains(r) && !tier.roles.contains(r)
            })
            .collect()
    }

    /// The privileged roles a user asking for `roles` would be given: those of `roles` and of
    /// what they inherit (holding a role means holding its ancestors), sorted.
    pub(crate) fn privileged_in(&self, roles: &RoleSet) -> Vec<String> {
        if self.privileged.is_empty() {
            return Vec::new();
        }
        self.resolver
            .close(roles)
            .into_iter()
            .filter(|r| self.privileged.contains(r))
            .collect()
    }

    /// The first SoD rule whose roles are all in `final_roles` (closed under inheritance).
    /// The caller passes the final set, after the merge with the user's current roles.
    pub(crate) fn sod_violation(&self, final_roles: &RoleSet) -> Option<&SodRule> {
        let closed = self.resolver.close(final_roles);
        self.sod
            .iter()
            .find(|rule| rule.roles.iter().all(|r| closed.contains(r)))
    }

    /// Union of the permissions of every role in the set and of their ancestors, normalised so
    /// that no permission is covered by a wildcard permission also in the set. Memoised per
    /// distinct set (the memo is bounded), so repeated sets cost one hash lookup.
    pub fn effective_permissions(&self, roles: &RoleSet) -> Arc<PermissionSet> {
        self.resolver.effective_permissions(roles)
    }

    /// The role set a user holding `current` ends with when a job of `mode` wants `desired`:
    ///
    /// - `merge`: current ∪ desired. A merge never removes a role.
    /// - `replace`: desired ∪ every current role the policy does not manage (granted by hand in
    ///   the target) ∪ every protected role the user holds (`Employee`). A replace removes only
    ///   managed, unprotected roles the job does not want.
    ///
    /// `desired` is taken as given: the caller expands it (`expand`) first.
    pub(crate) fn final_roles(&self, mode: Mode, current: &RoleSet, desired: &RoleSet) -> RoleSet {
        match mode {
            Mode::Merge => current.union(desired).cloned().collect(),
            Mode::Replace => {
                let mut out = desired.clone();
                out.extend(
                    current
                        .iter()
                        .filter(|r| !self.is_managed(r) || self.protected_roles.contains(*r))
                        .cloned(),
                );
                out
            }
        }
    }

    /// Empties the `effective_permissions` memo.
    #[cfg(test)]
    fn clear_permission_cache(&self) {
        self.resolver.clear_memo();
    }

    /// Number of role sets currently memoised by `effective_permissions`.
    #[cfg(test)]
    fn permission_cache_len(&self) -> usize {
        self.resolver.memo_len()
    }

    /// The policy as `GET /v1/policy` shows it (without what `LivePolicy` knows: the import
    /// notes and the last reload error).
    pub(crate) fn summary(&self) -> PolicySummary {
        PolicySummary {
            fingerprint: self.fingerprint.clone(),
            expand_inherited: self.expand_inherited,
            protected_roles: self.protected_roles.clone(),
            tiers: self.tiers.clone(),
            roles: self.roles.clone(),
            sod: self.sod.clone(),
            privileged_roles: self.privileged.clone(),
            approval: self.approval.clone(),
            import: None,
            reload_error: None,
        }
    }

    /// One role as `GET /v1/policy/roles/{name}` shows it. `None` outside the catalog.
    pub(crate) fn role_detail(&self, name: &str) -> Option<RoleDetail> {
        let role = self.role(name)?;
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .filter(|t| t.roles.contains(name))
            .map(|t| t.name.clone())
            .collect();
        let sod: Vec<SodRule> = self
            .sod
            .iter()
            .filter(|r| r.roles.contains(name))
            .cloned()
            .collect();
        let single = RoleSet::from([name.to_owned()]);
        Some(RoleDetail {
            name: role.name.clone(),
            inherits: role.inherits.clone(),
            ancestors: self.ancestors(name),
            permissions: role.permissions.clone(),
            effective_permissions: (*self.effective_permissions(&single)).clone(),
            tiers,
            sod,
            privileged: !self.privileged_in(&single).is_empty(),
        })
    }

    /// A copy of this policy whose roles carry the permissions Genesys reports for them
    /// (`imported`), keeping local inheritance, tiers and SoD rules, plus a list of notes: one
    /// `role "X" is in the policy but not in Genesys` per policy role Genesys lacks (that role
    /// keeps its local permissions), and one per malformed imported permission (skipped).
    /// Genesys roles the policy does not know are ignored: they are not managed.
    ///
    /// The copy's fingerprint hashes this policy's fingerprint together with the imported
    /// permissions actually used, so it changes exactly when the effective catalog does.
    pub(crate) fn merge_imported_catalog(
        &self,
        imported: &[ImportedRole],
    ) -> (Policy, Vec<String>) {
        load::merge_imported(self, imported)
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
