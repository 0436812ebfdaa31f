//! Parsing and validation of the policy file (`config/policy.toml` documents every key).
//!
//! Validation never stops at the first problem: every check runs on what could be parsed and
//! all problems are returned together, so one `rolesync policy check` shows everything to fix.
//! The only exception is a TOML syntax or schema error (bad syntax, unknown key, wrong type):
//! the document has no usable shape then, and that one error is reported with its position.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::resolve::{Resolver, validate_permission};
use super::{Approval, ImportedRole, Policy, PolicyError, Role, RoleSet, SodRule, Tier};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_expand_inherited")]
    expand_inherited: bool,
    #[serde(default = "default_protected_roles")]
    protected_roles: Vec<String>,
    #[serde(default)]
    tiers: Vec<RawTier>,
    #[serde(default)]
    roles: Vec<RawRole>,
    #[serde(default)]
    sod: Vec<RawSod>,
    #[serde(default)]
    privileged_roles: Vec<String>,
    #[serde(default)]
    approval: RawApproval,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: String,
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    #[serde(default)]
    inherits: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSod {
    name: String,
    roles: Vec<String>,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    #[serde(default = "default_max_removal_fraction")]
    max_removal_fraction: f64,
    #[serde(default = "default_max_removed_users")]
    max_removed_users: u64,
}

impl Default for RawApproval {
    fn default() -> Self {
        RawApproval {
            max_removal_fraction: default_max_removal_fraction(),
            max_removed_users: default_max_removed_users(),
        }
    }
}

fn default_expand_inherited() -> bool {
    true
}

fn default_protected_roles() -> Vec<String> {
    vec!["Employee".to_owned()]
}

fn default_max_removal_fraction() -> f64 {
    0.2
}

fn default_max_removed_users() -> u64 {
    500
}

/// Parses, validates and builds a policy from its TOML source.
pub(super) fn parse(source: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(source).map_err(|e| PolicyError {
        problems: vec![toml_problem(source, &e)],
    })?;
    build(raw, sha256_hex(source.as_bytes()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One line, `line L, column C: message`. The toml crate's own `Display` is a multi-line
/// snippet, which does not fit a one-problem-per-line report.
fn toml_problem(source: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(source, span.start);
            format!("line {line}, column {column}: {}", e.message().trim_end())
        }
        None => e.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Reports an empty or padded name. Padding matters because Genesys matches roles by exact
/// name: `"Agent "` would silently never match anything.
fn check_name(kind: &str, position: usize, name: &str, problems: &mut Vec<String>) {
    if name.trim().is_empty() {
        problems.push(format!("{kind} #{position} has an empty name"));
    } else if name.trim() != name {
        problems.push(format!(
            "{kind} \"{name}\" has leading or trailing whitespace in its name"
        ));
    }
}

/// Keeps the first item of each name and reports names declared more than once, in order of
/// first declaration. Later duplicates are dropped so that the remaining checks see one
/// definition per name (their own problems would only be noise next to the duplicate).
fn dedup_by_name<T>(
    kind: &str,
    items: Vec<T>,
    name_of: impl Fn(&T) -> &str,
    problems: &mut Vec<String>,
) -> Vec<T> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut kept = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let name = name_of(&item).to_owned();
        check_name(kind, i + 1, &name, problems);
        let count = counts.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            order.push(name);
            kept.push(item);
        }
    }
    for name in order {
        let n = counts.get(&name).copied().unwrap_or(1);
        if n > 1 {
            problems.push(format!("duplicate {kind} \"{name}\" (declared {n} times)"));
        }
    }
    kept
}

fn build(raw: RawPolicy, fingerprint: String) -> Result<Policy, PolicyError> {
    let mut problems = Vec::new();

    if raw.protected_roles.iter().any(|r| r.trim().is_empty()) {
        problems.push("protected_roles contains an empty role name".to_owned());
    }
    let protected: RoleSet = raw.protected_roles.into_iter().collect();

    // Roles, then the inheritance graph on role ids. Edges to unknown parents are reported and
    // left out, so that cycle detection and closures work on the rest.
    let raw_roles = dedup_by_name("role", raw.roles, |r| &r.name, &mut problems);
    let index: HashMap<&str, u32> = raw_roles
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i as u32))
        .collect();
    let mut parents: Vec<Vec<u32>> = Vec::with_capacity(raw_roles.len());
    for role in &raw_roles {
        let mut edges = Vec::new();
        for parent in &role.inherits {
            match index.get(parent.as_str()) {
                None => problems.push(format!(
                    "role \"{}\" inherits unknown role \"{parent}\"",
                    role.name
                )),
                Some(p) if edges.contains(p) => problems.push(format!(
                    "role \"{}\" inherits \"{parent}\" more than once",
                    role.name
                )),
                Some(p) => edges.push(*p),
            }
        }
        parents.push(edges);
        for perm in &role.permissions {
            if let Err(why) = validate_permission(perm) {
                problems.push(format!(
                    "role \"{}\" has malformed permission \"{perm}\": {why}",
                    role.name
                ));
            }
        }
    }

    let resolver = match topological_order(&parents) {
        Ok(topo) => {
            let names = raw_roles.iter().map(|r| r.name.clone()).collect();
            let own: Vec<Vec<String>> = raw_roles.iter().map(|r| r.permissions.clone()).collect();
            Some(Resolver::new(names, parents, &own, topo))
        }
        Err(()) => {
            for cycle in find_cycles(&parents) {
                let path: Vec<&str> = cycle
                    .iter()
                    .map(|&r| raw_roles[r as usize].name.as_str())
                    .collect();
                problems.push(format!("inheritance cycle: {}", path.join(" -> ")));
            }
            None
        }
    };

    let raw_tiers = dedup_by_name("tier", raw.tiers, |t| &t.name, &mut problems);
    let mut tiers = Vec::with_capacity(raw_tiers.len());
    for raw_tier in raw_tiers {
        let tier = Tier {
            name: raw_tier.name,
            roles: raw_tier.roles.into_iter().collect(),
        };
        for role in &tier.roles {
            match index.get(role.as_str()) {
                // A tier may list a protected role (`Employee`) without it being in the catalog.
                None if protected.contains(role) => {}
                None => problems.push(format!(
                    "tier \"{}\" allows unknown role \"{role}\"",
                    tier.name
                )),
                Some(&r) => {
                    if let Some(resolver) = &resolver {
                        check_tier_ancestors(&tier, role, r, resolver, &protected, &mut problems);
                    }
                }
            }
        }
        tiers.push(tier);
    }

    let raw_sod = dedup_by_name("sod rule", raw.sod, |s| &s.name, &mut problems);
    let mut sod = Vec::with_capacity(raw_sod.len());
    for raw_rule in raw_sod {
        let rule = SodRule {
            name: raw_rule.name,
            roles: raw_rule.roles.into_iter().collect(),
            reason: raw_rule.reason,
        };
        let mut known = true;
        for role in &rule.roles {
            if !index.contains_key(role.as_str()) {
                known = false;
                problems.push(format!(
                    "sod rule \"{}\" names unknown role \"{role}\"",
                    rule.name
                ));
            }
        }
        if rule.roles.len() < 2 {
            problems.push(format!(
                "sod rule \"{}\" needs at least 2 distinct roles, has {}",
                rule.name,
                rule.roles.len()
            ));
        } else if known && let Some(resolver) = &resolver {
            check_sod_satisfiable(&rule, resolver, &mut problems);
        }
        sod.push(rule);
    }

    let mut privileged = RoleSet::new();
    for role in raw.privileged_roles {
        if !index.contains_key(role.as_str()) {
            problems.push(format!("privileged_roles names unknown role \"{role}\""));
        }
        privileged.insert(role);
    }

    let fraction = raw.approval.max_removal_fraction;
    // Written as a negated range test so that NaN is refused too.
    if !(0.0..=1.0).contains(&fraction) {
        problems.push(format!(
            "approval.max_removal_fraction must be between 0 and 1, got {fraction}"
        ));
    }

    match resolver {
        Some(resolver) if problems.is_empty() => {
            let roles = raw_roles
                .into_iter()
                .map(|r| Role {
                    name: r.name,
                    inherits: r.inherits,
                    permissions: r.permissions,
                })
                .collect();
            let tier_index = tiers
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect();
            Ok(Policy {
                expand_inherited: raw.expand_inherited,
                protected_roles: protected,
                tiers,
                tier_index,
                roles,
                sod,
                privileged,
                approval: Approval {
                    max_removal_fraction: fraction,
                    max_removed_users: raw.approval.max_removed_users,
                },
                fingerprint,
                resolver,
            })
        }
        // Without a resolver the graph is cyclic, and the cycle has been reported.
        _ => Err(PolicyError { problems }),
    }
}

/// A tier that allows a role but not one of its ancestors can never grant that role, since
/// entitlement is checked on the set closed under inheritance: almost certainly a mistake.
fn check_tier_ancestors(
    tier: &Tier,
    role: &str,
    r: u32,
    resolver: &Resolver,
    protected: &RoleSet,
    problems: &mut Vec<String>,
) {
    let missing: Vec<String> = resolver
        .closure_ids(r as usize)
        .iter()
        .map(|&a| resolver.name(a))
        .filter(|a| *a != role && !tier.roles.contains(*a) && !protected.contains(*a))
        .map(|a| format!("\"{a}\""))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "tier \"{}\" allows \"{role}\" but not its inherited role(s) {}, so \"{role}\" can never be granted under it",
            tier.name,
            missing.join(", ")
        ));
    }
}

/// A role whose closure holds every role of an SoD rule violates it on its own and can never be
/// granted to anyone (e.g. a rule naming a role and one of its ancestors).
fn check_sod_satisfiable(rule: &SodRule, resolver: &Resolver, problems: &mut Vec<String>) {
    let rule_ids: Vec<u32> = rule
        .roles
        .iter()
        .filter_map(|r| resolver.index_of(r))
        .map(|r| r as u32)
        .collect();
    for r in 0..resolver.len() {
        let closure = resolver.closure_ids(r);
        if rule_ids.iter().all(|id| closure.binary_search(id).is_ok()) {
            problems.push(format!(
                "role \"{}\" alone violates sod rule \"{}\" (it holds all of its roles through inheritance)",
                resolver.name(r as u32),
                rule.name
            ));
        }
    }
}

/// Kahn's algorithm, parents before children. `Err` when some role is on or below a cycle.
pub(super) fn topological_order(parents: &[Vec<u32>]) -> Result<Vec<u32>, ()> {
    let n = parents.len();
    let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (child, ps) in parents.iter().enumerate() {
        pending[child] = ps.len();
        for &p in ps {
            children[p as usize].push(child as u32);
        }
    }
    let mut ready: VecDeque<u32> = (0..n)
        .filter(|&r| pending[r] == 0)
        .map(|r| r as u32)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(r) = ready.pop_front() {
        order.push(r);
        for &c in &children[r as usize] {
            pending[c as usize] -= 1;
            if pending[c as usize] == 0 {
                ready.push_back(c);
            }
        }
    }
    if order.len() == n { Ok(order) } else { Err(()) }
}

/// Every cycle closed by a back edge of a depth-first search over "inherits" edges, each as a
/// path that starts and ends at the same role (`A, B, A` for A inherits B inherits A), rotated
/// to start at its earliest-declared role and deduplicated. A graph has a cycle iff a DFS finds
/// a back edge, so a cyclic graph always yields at least one. Iterative, so that a long
/// inheritance chain cannot overflow the stack.
pub(super) fn find_cycles(parents: &[Vec<u32>]) -> Vec<Vec<u32>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    let n = parents.len();
    let mut mark = vec![Mark::Unvisited; n];
    // Position on the DFS path of each `OnPath` role.
    let mut depth = vec![0usize; n];
    let mut seen: HashSet<Vec<u32>> = HashSet::new();
    let mut cycles = Vec::new();
    for start in 0..n {
        if mark[start] != Mark::Unvisited {
            continue;
        }
        // (role, index of the next parent edge to follow)
        let mut path: Vec<(u32, usize)> = vec![(start as u32, 0)];
        mark[start] = Mark::OnPath;
        while let Some(top) = path.last_mut() {
            let node = top.0 as usize;
            let Some(&p) = parents[node].get(top.1) else {
                mark[node] = Mark::Done;
                path.pop();
                continue;
            };
            top.1 += 1;
            match mark[p as usize] {
                Mark::Unvisited => {
                    mark[p as usize] = Mark::OnPath;
                    depth[p as usize] = path.len();
                    path.push((p, 0));
                }
                Mark::OnPath => {
                    let mut cycle: Vec<u32> =
                        path[depth[p as usize]..].iter().map(|&(r, _)| r).collect();
                    let first = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|&(_, r)| *r)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(first);
                    if seen.insert(cycle.clone()) {
                        cycle.push(cycle[0]);
                        cycles.push(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
    }
    cycles
}

/// See `Policy::merge_imported_catalog`.
pub(super) fn merge_imported(policy: &Policy, imported: &[ImportedRole]) -> (Policy, Vec<String>) {
    // Genesys names are unique, but should a name appear twice, its permissions are united.
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for role in imported {
        by_name
            .entry(role.name.as_str())
            .or_default()
            .extend(role.permissions.iter().map(String::as_str));
    }
    let mut notes = Vec::new();
    let mut roles = policy.roles.clone();
    let mut hasher = Sha256::new();
    hasher.update(policy.fingerprint.as_bytes());
    for role in &mut roles {
        let Some(perms) = by_name.get(role.name.as_str()) else {
            notes.push(format!(
                "role \"{}\" is in the policy but not in Genesys",
                role.name
            ));
            continue;
        };
        let mut kept: Vec<String> = Vec::with_capacity(perms.len());
        for perm in perms {
            match validate_permission(perm) {
                Err(why) => notes.push(format!(
                    "Genesys role \"{}\" has malformed permission \"{perm}\" (skipped): {why}",
                    role.name
                )),
                Ok(()) if kept.iter().any(|k| k == perm) => {}
                Ok(()) => kept.push((*perm).to_owned()),
            }
        }
        // Length-prefixed fields, so that no two different imports hash the same bytes.
        for field in std::iter::once(&role.name).chain(kept.iter()) {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.update(u64::MAX.to_le_bytes());
        role.permissions = kept;
    }
    let own: Vec<Vec<String>> = roles.iter().map(|r| r.permissions.clone()).collect();
    let merged = Policy {
        expand_inherited: policy.expand_inherited,
        protected_roles: policy.protected_roles.clone(),
        tiers: policy.tiers.clone(),
        tier_index: policy.tier_index.clone(),
        roles,
        sod: policy.sod.clone(),
        privileged: policy.privileged.clone(),
        approval: policy.approval.clone(),
        fingerprint: hex::encode(hasher.finalize()),
        resolver: policy.resolver.with_permissions(&own),
    };
    (merged, notes)
}
