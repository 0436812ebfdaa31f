//! Property tests: the resolver against naive reference implementations on random graphs.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

/// A random catalog: `parents[r]` lists the parents of role `R{r}`, `perms[r]` its permissions.
#[derive(Debug, Clone)]
struct Catalog {
    parents: Vec<Vec<usize>>,
    perms: Vec<Vec<String>>,
}

fn name(r: usize) -> String {
    format!("R{r}")
}

impl Catalog {
    fn toml(&self) -> String {
        let mut out = String::new();
        for (r, parents) in self.parents.iter().enumerate() {
            let inherits: Vec<String> = parents
                .iter()
                .map(|&p| format!("\"{}\"", name(p)))
                .collect();
            let perms: Vec<String> = self.perms[r].iter().map(|p| format!("\"{p}\"")).collect();
            out.push_str(&format!(
                "[[roles]]\nname = \"{}\"\ninherits = [{}]\npermissions = [{}]\n",
                name(r),
                inherits.join(", "),
                perms.join(", ")
            ));
        }
        out
    }

    /// Reflexive-transitive ancestors of `r`, by plain graph search.
    fn ancestors(&self, r: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([r]);
        let mut todo = vec![r];
        while let Some(x) = todo.pop() {
            for &p in &self.parents[x] {
                if seen.insert(p) {
                    todo.push(p);
                }
            }
        }
        seen
    }

    /// True when some role reaches itself through at least one edge.
    fn has_cycle(&self) -> bool {
        (0..self.parents.len()).any(|r| {
            self.parents[r]
                .iter()
                .any(|&p| self.ancestors(p).contains(&r))
        })
    }

    fn is_edge(&self, child: usize, parent: usize) -> bool {
        self.parents[child].contains(&parent)
    }
}

/// Random edges, deduplicated, in generation order.
fn dedup_edges(n: usize, pairs: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut parents = vec![Vec::new(); n];
    for &(child, parent) in pairs {
        if !parents[child].contains(&parent) {
            parents[child].push(parent);
        }
    }
    parents
}

fn permission() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["a", "b", "*"]),
        prop::sample::select(vec!["x", "y", "*"]),
        prop::sample::select(vec!["v", "e", "*"]),
    )
        .prop_map(|(d, e, a)| format!("{d}:{e}:{a}"))
}

fn perms_for(n: usize) -> impl Strategy<Value = Vec<Vec<String>>> {
    prop::collection::vec(prop::collection::vec(permission(), 0..3), n)
}

/// Acyclic graphs: edges go from a later to an earlier position of a random permutation, so the
/// declaration order is not a topological order.
fn dag() -> impl Strategy<Value = Catalog> {
    (1usize..=40)
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec((0..n, 0..n), 0..=n * 3),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                perms_for(n),
            )
        })
        .prop_map(|(n, pairs, order, perms)| {
            let edges: Vec<(usize, usize)> = pairs
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (order[a.max(b)], order[a.min(b)]))
                .collect();
            Catalog {
                parents: dedup_edges(n, &edges),
                perms,
            }
        })
}

/// Arbitrary graphs, self-loops included: some cyclic, some not.
fn graph() -> impl Strategy<Value = Catalog> {
    (1usize..=40)
        .prop_flat_map(|n| (Just(n), prop::collection::vec((0..n, 0..n), 0..=n * 2)))
        .prop_map(|(n, pairs)| Catalog {
            parents: dedup_edges(n, &pairs),
            perms: vec![Vec::new(); n],
        })
}

/// Naive effective permissions: the union over the closure, minus whatever another member of
/// the union matches.
fn reference_permissions(cat: &Catalog, roles: &BTreeSet<usize>) -> PermissionSet {
    let union: PermissionSet = roles
        .iter()
        .flat_map(|&r| cat.ancestors(r))
        .flat_map(|a| cat.perms[a].iter().cloned())
        .collect();
    union
        .iter()
        .filter(|p| !union.iter().any(|q| q != *p && permission_matches(q, p)))
        .cloned()
        .collect()
}

fn index_of(role: &str) -> usize {
    role.strip_prefix('R')
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

proptest! {
    #[test]
    fn dag_loads_and_closure_matches_reference(cat in dag(), picks in prop::collection::vec(0usize..40, 0..5)) {
        let policy = Policy::from_toml_str(&cat.toml());
        prop_assert!(policy.is_ok(), "acyclic graph refused: {:?}", policy.err());
        let Ok(policy) = policy else { return Ok(()) };
        let n = cat.parents.len();
        for r in 0..n {
            let closure = policy.closure(&name(r));
            // Closed under inheritance: every parent of a member is a member.
            for member in &closure {
                let m = index_of(member);
                prop_assert!(m < n, "closure of R{} holds a stranger {}", r, member);
                for &p in &cat.parents[m] {
                    prop_assert!(closure.contains(&name(p)), "R{}: parent R{} of {} missing", r, p, member);
                }
            }
            // Exactly the reflexive-transitive ancestors.
            let reference: RoleSet = cat.ancestors(r).into_iter().map(name).collect();
            prop_assert_eq!(&closure, &reference);
        }
        // Sets: expand is the union of closures; effective permissions match the naive union.
        let chosen: BTreeSet<usize> = picks.into_iter().map(|p| p % n).collect();
        let roles: RoleSet = chosen.iter().map(|&r| name(r)).collect();
        let expected: RoleSet = chosen.iter().flat_map(|&r| cat.ancestors(r)).map(name).collect();
        prop_assert_eq!(policy.expand(&roles), expected);
        prop_assert_eq!(&*policy.effective_permissions(&roles), &reference_permissions(&cat, &chosen));
        // Twice: the memoised answer is the same.
        prop_assert_eq!(&*policy.effective_permissions(&roles), &reference_permissions(&cat, &chosen));
    }

    #[test]
    fn cyclic_graphs_fail_with_real_cycles_and_acyclic_ones_load(cat in graph()) {
        let result = Policy::from_toml_str(&cat.toml());
        if !cat.has_cycle() {
            prop_assert!(result.is_ok(), "acyclic graph refused: {:?}", result.err());
            return Ok(());
        }
        let Err(err) = result else {
            prop_assert!(false, "cyclic graph loaded:\n{}", cat.toml());
            return Ok(());
        };
        prop_assert!(!err.problems.is_empty());
        for problem in &err.problems {
            let path = problem.strip_prefix("inheritance cycle: ");
            prop_assert!(path.is_some(), "not a cycle problem: {}", problem);
            let roles: Vec<usize> = path.unwrap_or_default().split(" -> ").map(index_of).collect();
            prop_assert!(roles.len() >= 2, "{}", problem);
            prop_assert_eq!(roles.first(), roles.last(), "{}", problem);
            for pair in roles.windows(2) {
                prop_assert!(pair[0] < cat.parents.len() && cat.is_edge(pair[0], pair[1]),
                    "R{} does not inherit R{} in {}", pair[0], pair[1], problem);
            }
        }
    }

    #[test]
    fn permission_diff_is_consistent_with_matching(
        before in prop::collection::btree_set(permission(), 0..6),
        after in prop::collection::btree_set(permission(), 0..6),
    ) {
        let (added, removed) = permission_diff(&before, &after);
        for p in &added {
            prop_assert!(after.contains(p) && !before.iter().any(|q| permission_matches(q, p)));
        }
        for p in &removed {
            prop_assert!(before.contains(p) && !after.iter().any(|q| permission_matches(q, p)));
        }
        // Whatever is not reported is still granted.
        for p in after.iter().filter(|p| !added.contains(p)) {
            prop_assert!(before.iter().any(|q| permission_matches(q, p)));
        }
        for p in before.iter().filter(|p| !removed.contains(p)) {
            prop_assert!(after.iter().any(|q| permission_matches(q, p)));
        }
    }
}
