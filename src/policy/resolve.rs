//! The resolver: closures, entitlements and effective permissions, answered from tables
//! precomputed once at load so that per-user questions cost a few slice merges.
//!
//! Roles are numbered by their position in the (deduplicated) catalog; permissions are interned
//! with ids in lexical order of their text, so a sorted id vector is also a sorted string list.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use super::{PermissionSet, RoleSet};

/// Above this many memoised role sets the memo is emptied before the next insert. Real batches
/// have a few hundred distinct sets; the bound only protects against adversarial input.
const MEMO_LIMIT: usize = 100_000;

/// Interned id of the `*` segment (always 0, see `PermTable::new`).
const STAR: u32 = 0;

/// Checks that `perm` is `domain:entity:action`: exactly three non-empty segments, each either
/// `*` or made of `[A-Za-z0-9_-]`. Returns why not, as a phrase to append to a problem.
pub fn validate_permission(perm: &str) -> Result<(), String> {
    let segments: Vec<&str> = perm.split(':').collect();
    if segments.len() != 3 {
        return Err(format!(
            "expected 3 `:`-separated segments (domain:entity:action), found {}",
            segments.len()
        ));
    }
    for (i, seg) in segments.iter().enumerate() {
        let which = ["domain", "entity", "action"][i];
        if seg.is_empty() {
            return Err(format!("the {which} segment is empty"));
        }
        if *seg == "*" {
            continue;
        }
        if seg.contains('*') {
            return Err(format!(
                "`*` must be a whole segment, not part of the {which} \"{seg}\""
            ));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!("invalid character {c:?} in the {which} \"{seg}\""));
        }
    }
    Ok(())
}

/// True when `pattern` grants `perm`: segment by segment, a `*` in the pattern matches anything
/// (including `*`), any other segment must be equal. A narrower permission never matches a
/// broader one (`analytics:report:view` does not match `analytics:*:view`). Strings that are
/// not three segments match only themselves.
pub fn permission_matches(pattern: &str, perm: &str) -> bool {
    match (split3(pattern), split3(perm)) {
        (Some(p), Some(q)) => p.iter().zip(q.iter()).all(|(a, b)| *a == "*" || a == b),
        _ => pattern == perm,
    }
}

/// What changed between two effective permission sets, wildcards understood: `added` are the
/// permissions of `after` that nothing in `before` grants, `removed` the permissions of `before`
/// that nothing in `after` grants. Both sorted. So replacing `analytics:report:view` by
/// `analytics:*:view` adds the wildcard and removes nothing, since the user keeps that access.
pub fn permission_diff(
    before: &PermissionSet,
    after: &PermissionSet,
) -> (Vec<String>, Vec<String>) {
    (not_granted_by(after, before), not_granted_by(before, after))
}

/// Members of `set` that no permission of `by` matches.
fn not_granted_by(set: &PermissionSet, by: &PermissionSet) -> Vec<String> {
    // An exact hit is the common case and a set lookup; only wildcards need a scan.
    let wildcards: Vec<&String> = by.iter().filter(|p| p.contains('*')).collect();
    set.iter()
        .filter(|p| !by.contains(*p) && !wildcards.iter().any(|w| permission_matches(w, p)))
        .cloned()
        .collect()
}

fn split3(perm: &str) -> Option<[&str; 3]> {
    let mut it = perm.split(':');
    let parts = [it.next()?, it.next()?, it.next()?];
    if it.next().is_some() {
        None
    } else {
        Some(parts)
    }
}

/// Interned permissions with their segments interned too, so that wildcard matching compares
/// integers. Invariant: ids follow the lexical order of `texts`; segment id `STAR` is `*`.
struct PermTable {
    texts: Vec<String>,
    segs: Vec<[u32; 3]>,
    index: HashMap<String, u32>,
}

impl PermTable {
    /// Interns every well-formed permission of `perms`; malformed ones are skipped (load has
    /// already reported them, and a policy with problems is never handed out).
    fn new<'a>(perms: impl Iterator<Item = &'a str>) -> Self {
        let texts: Vec<String> = perms
            .filter(|p| validate_permission(p).is_ok())
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut seg_ids: HashMap<&str, u32> = HashMap::from([("*", STAR)]);
        let mut segs = Vec::with_capacity(texts.len());
        for text in &texts {
            let mut ids = [STAR; 3];
            for (slot, seg) in ids.iter_mut().zip(text.split(':')) {
                let next = seg_ids.len() as u32;
                *slot = *seg_ids.entry(seg).or_insert(next);
            }
            segs.push(ids);
        }
        let index = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        PermTable { texts, segs, index }
    }

    fn id(&self, perm: &str) -> Option<u32> {
        self.index.get(perm).copied()
    }

    fn is_wildcard(&self, id: u32) -> bool {
        self.segs[id as usize].contains(&STAR)
    }

    /// `permission_matches` on interned ids.
    fn covers(&self, pattern: u32, perm: u32) -> bool {
        let (p, q) = (&self.segs[pattern as usize], &self.segs[perm as usize]);
        (0..3).all(|i| p[i] == STAR || p[i] == q[i])
    }

    /// Drops every permission covered by another (wildcard) permission of the set. `ids` must be
    /// sorted and deduplicated; it stays sorted. Since coverage is a partial order, what is left
    /// is the set of maximal permissions, whatever order they are examined in; and normalising a
    /// union of normalised sets gives the same result as normalising the raw union, which is
    /// what lets per-role results be precomputed and merged.
    fn normalise(&self, ids: &mut Vec<u32>) {
        let wildcards: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| self.is_wildcard(id))
            .collect();
        if wildcards.is_empty() {
            return;
        }
        ids.retain(|&p| !wildcards.iter().any(|&w| w != p && self.covers(w, p)));
    }

    fn to_set(&self, ids: &[u32]) -> PermissionSet {
        ids.iter()
            .map(|&id| self.texts[id as usize].clone())
            .collect()
    }
}

/// Precomputed closures and permissions, plus the `effective_permissions` memo.
pub(super) struct Resolver {
    names: Vec<String>,
    index: HashMap<String, usize>,
    /// `parents[r]`: ids of the direct parents of `r`.
    parents: Vec<Vec<u32>>,
    /// Every id once, parents before children.
    topo: Vec<u32>,
    /// `closures[r]`: sorted ids of `r` and all its ancestors.
    closures: Vec<Box<[u32]>>,
    perms: PermTable,
    /// `role_perms[r]`: normalised, sorted permission ids of the closure of `r`.
    role_perms: Vec<Box<[u32]>>,
    memo: RwLock<HashMap<RoleSet, Arc<PermissionSet>>>,
}

impl Resolver {
    /// Builds the tables. `names` are unique; `parents[r]` are the ids of the parents of `r`;
    /// `own_perms[r]` its own permissions; `topo` lists every id exactly once, parents before
    /// children (so the graph must be acyclic).
    pub(super) fn new(
        names: Vec<String>,
        parents: Vec<Vec<u32>>,
        own_perms: &[Vec<String>],
        topo: Vec<u32>,
    ) -> Self {
        let n = names.len();
        let perms = PermTable::new(own_perms.iter().flatten().map(String::as_str));
        let mut closures: Vec<Box<[u32]>> = vec![Box::default(); n];
        let mut role_perms: Vec<Box<[u32]>> = vec![Box::default(); n];
        for &r in &topo {
            let r = r as usize;
            // Parents come earlier in `topo`, so their entries are final when read here.
            let mut closure = vec![r as u32];
            let mut ids: Vec<u32> = own_perms[r].iter().filter_map(|p| perms.id(p)).collect();
            for &p in &parents[r] {
                closure.extend_from_slice(&closures[p as usize]);
                ids.extend_from_slice(&role_perms[p as usize]);
            }
            closure.sort_unstable();
            closure.dedup();
            ids.sort_unstable();
            ids.dedup();
            perms.normalise(&mut ids);
            closures[r] = closure.into_boxed_slice();
            role_perms[r] = ids.into_boxed_slice();
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        Resolver {
            names,
            index,
            parents,
            topo,
            closures,
            perms,
            role_perms,
            memo: RwLock::new(HashMap::new()),
        }
    }

    /// The same catalog and hierarchy with other own permissions per role (`own_perms[r]` for
    /// role id `r`), and an empty memo.
    pub(super) fn with_permissions(&self, own_perms: &[Vec<String>]) -> Self {
        Resolver::new(
            self.names.clone(),
            self.parents.clone(),
            own_perms,
            self.topo.clone(),
        )
    }

    /// Number of catalog roles.
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Sorted ids of the closure of catalog role `r`.
    pub(super) fn closure_ids(&self, r: usize) -> &[u32] {
        &self.closures[r]
    }

    pub(super) fn name(&self, r: u32) -> &str {
        &self.names[r as usize]
    }

    pub(super) fn closure_names(&self, role: &str) -> RoleSet {
        match self.index_of(role) {
            Some(r) => self.closures[r]
                .iter()
                .map(|&a| self.names[a as usize].clone())
                .collect(),
            None => RoleSet::from([role.to_owned()]),
        }
    }

    /// The set closed under inheritance; roles outside the catalog are kept as they are.
    pub(super) fn close(&self, roles: &RoleSet) -> RoleSet {
        let mut out = RoleSet::new();
        for role in roles {
            match self.index_of(role) {
                Some(r) => {
                    for &a in self.closures[r].iter() {
                        let name = &self.names[a as usize];
                        if !out.contains(name) {
                            out.insert(name.clone());
                        }
                    }
                }
                None => {
                    out.insert(role.clone());
                }
            }
        }
        out
    }

    pub(super) fn effective_permissions(&self, roles: &RoleSet) -> Arc<PermissionSet> {
        // A poisoned lock only means another thread panicked between two memo operations; the
        // map itself is always a valid cache, so keep using it.
        if let Some(hit) = self
            .memo
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(roles)
        {
            return Arc::clone(hit);
        }
        // Computed outside the lock: two threads may race on the same set, both results are
        // equal and the first insert wins.
        let computed = Arc::new(self.compute(roles));
        let mut memo = self.memo.write().unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        Arc::clone(memo.entry(roles.clone()).or_insert(computed))
    }

    fn compute(&self, roles: &RoleSet) -> PermissionSet {
        let known: Vec<usize> = roles.iter().filter_map(|r| self.index_of(r)).collect();
        match known.as_slice() {
            [] => PermissionSet::new(),
            // Per-role results are already normalised.
            [r] => self.perms.to_set(&self.role_perms[*r]),
            _ => {
                let mut ids: Vec<u32> = known
                    .iter()
                    .flat_map(|&r| self.role_perms[r].iter().copied())
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                self.perms.normalise(&mut ids);
                self.perms.to_set(&ids)
            }
        }
    }

    #[cfg(test)]
    pub(super) fn clear_memo(&self) {
        self.memo
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    #[cfg(test)]
    pub(super) fn memo_len(&self) -> usize {
        self.memo
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
