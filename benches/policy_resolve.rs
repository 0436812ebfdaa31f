//! Policy resolver benchmark: `cargo bench --bench policy_resolve`.
//!
//! Generates a catalog of 2 000 roles in 10 inheritance levels (200 per level, each role
//! inheriting one role of the level above and sometimes one more from any higher level), each
//! with 2–5 permissions of which about 15 % are wildcards, then reports the median of several
//! runs of:
//! - load + validate of the TOML text;
//! - `effective_permissions` on 10 000 distinct random sets of 1–5 roles, on a policy loaded
//!   afresh (cold memo);
//! - `effective_permissions` on 1 000 000 rows drawn from 1 000 distinct sets (warm memo).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rolesync::policy::{Policy, RoleSet};

const LEVELS: usize = 10;
const PER_LEVEL: usize = 200;
const RUNS: usize = 5;
const COLD_SETS: usize = 10_000;
const WARM_SETS: usize = 1_000;
const WARM_ROWS: usize = 1_000_000;

/// SplitMix64: deterministic, so every run measures the same catalog and sets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn role_name(level: usize, k: usize) -> String {
    format!("Role L{level} #{k}")
}

fn catalog(rng: &mut Rng) -> String {
    const ACTIONS: [&str; 6] = ["view", "add", "edit", "delete", "export", "monitor"];
    let mut out = String::from("expand_inherited = true\nprotected_roles = [\"Employee\"]\n");
    for level in 0..LEVELS {
        for k in 0..PER_LEVEL {
            let mut parents = Vec::new();
            if level > 0 {
                parents.push(role_name(level - 1, (k + rng.below(5)) % PER_LEVEL));
                if rng.below(4) == 0 {
                    let other = rng.below(level);
                    let name = role_name(other, rng.below(PER_LEVEL));
                    if !parents.contains(&name) {
                        parents.push(name);
                    }
                }
            }
            let mut perms = Vec::new();
            for _ in 0..2 + rng.below(4) {
                let domain = format!("domain{}", rng.below(30));
                let perm = match rng.below(20) {
                    0 => format!("{domain}:*:*"),
                    1 | 2 => format!("{domain}:*:{}", ACTIONS[rng.below(ACTIONS.len())]),
                    _ => format!(
                        "{domain}:entity{}:{}",
                        rng.below(40),
                        ACTIONS[rng.below(ACTIONS.len())]
                    ),
                };
                if !perms.contains(&perm) {
                    perms.push(perm);
                }
            }
            let quote = |v: &[String]| {
                v.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                out,
                "[[roles]]\nname = \"{}\"\ninherits = [{}]\npermissions = [{}]\n",
                role_name(level, k),
                quote(&parents),
                quote(&perms)
            );
        }
    }
    // A few tiers and a rule, so that validation has its full work to do. Tier `t` allows the
    // first 2t+2 levels: parents are always on higher levels, so each tier is closed under
    // inheritance (validation refuses a tier allowing a role but not its ancestors).
    for t in 0..5 {
        let roles: Vec<String> = (0..(2 * t + 2).min(LEVELS))
            .flat_map(|l| (0..PER_LEVEL).map(move |k| format!("\"{}\"", role_name(l, k))))
            .collect();
        let _ = write!(
            out,
            "[[tiers]]\nname = \"Tier {t}\"\nroles = [{}]\n",
            roles.join(", ")
        );
    }
    let _ = write!(
        out,
        "[[sod]]\nname = \"rule\"\nroles = [\"{}\", \"{}\"]\nreason = \"bench\"\n",
        role_name(LEVELS - 1, 0),
        role_name(LEVELS - 1, 100)
    );
    out
}

fn random_set(rng: &mut Rng) -> RoleSet {
    let size = 1 + rng.below(5);
    (0..size)
        .map(|_| role_name(rng.below(LEVELS), rng.below(PER_LEVEL)))
        .collect()
}

fn distinct_sets(rng: &mut Rng, n: usize) -> Vec<RoleSet> {
    let mut seen = HashSet::new();
    let mut sets = Vec::with_capacity(n);
    while sets.len() < n {
        let set = random_set(rng);
        if seen.insert(set.clone()) {
            sets.push(set);
        }
    }
    sets
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn fmt_per(d: Duration, n: usize) -> String {
    let ns = d.as_nanos() as f64 / n as f64;
    if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The policy, or the process ends naming what is wrong with the generated catalog.
fn or_exit(loaded: Result<Policy, rolesync::policy::PolicyError>) -> Policy {
    match loaded {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "generated catalog does not load ({} problems):",
                e.problems.len()
            );
            for problem in e.problems.iter().take(10) {
                eprintln!("  {problem}");
            }
            std::process::exit(1);
        }
    }
}

/// The catalog loaded again, with an empty `effective_permissions` memo.
fn load(text: &str) -> Policy {
    or_exit(Policy::from_toml_str(text))
}

fn main() {
    let mut rng = Rng(0x5EED);
    let text = catalog(&mut rng);

    let mut loads = Vec::new();
    let mut loaded = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let policy = Policy::from_toml_str(black_box(&text));
        loads.push(start.elapsed());
        loaded = Some(policy);
    }
    let policy = match loaded {
        Some(loaded) => or_exit(loaded),
        None => return,
    };

    let roles = policy.roles();
    let closure_sizes: Vec<usize> = roles
        .iter()
        .map(|r| policy.closure(&r.name).len())
        .collect();
    let perm_sizes: Vec<usize> = roles
        .iter()
        .map(|r| {
            policy
                .effective_permissions(&RoleSet::from([r.name.clone()]))
                .len()
        })
        .collect();
    let wildcards = roles
        .iter()
        .flat_map(|r| &r.permissions)
        .filter(|p| p.contains('*'))
        .count();
    let own = roles.iter().map(|r| r.permissions.len()).sum::<usize>();

    let cold_sets = distinct_sets(&mut rng, COLD_SETS);
    let mut cold = Vec::new();
    let mut cold_perm_total = 0;
    for _ in 0..RUNS {
        // A policy loaded afresh has an empty memo.
        let fresh = load(&text);
        let start = Instant::now();
        let mut total = 0;
        for set in &cold_sets {
            total += fresh.effective_permissions(black_box(set)).len();
        }
        cold.push(start.elapsed());
        cold_perm_total = total;
    }

    let warm_sets = distinct_sets(&mut rng, WARM_SETS);
    let rows: Vec<u32> = (0..WARM_ROWS)
        .map(|_| rng.below(WARM_SETS) as u32)
        .collect();
    let warm_policy = load(&text);
    for set in &warm_sets {
        black_box(warm_policy.effective_permissions(set));
    }
    let mut warm = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        for &row in &rows {
            black_box(warm_policy.effective_permissions(black_box(&warm_sets[row as usize])));
        }
        warm.push(start.elapsed());
    }

    let avg = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    println!(
        "catalog: {} roles, {} levels, {} own permissions ({} wildcards), {} KiB of TOML",
        roles.len(),
        LEVELS,
        own,
        wildcards,
        text.len() / 1024
    );
    println!(
        "closure size per role: avg {:.1}, max {}; effective permissions per role: avg {:.1}, max {}",
        avg(&closure_sizes),
        closure_sizes.iter().max().copied().unwrap_or(0),
        avg(&perm_sizes),
        perm_sizes.iter().max().copied().unwrap_or(0)
    );
    println!("median of {RUNS} runs:");
    println!(
        "  load + validate:                     {:.2} ms",
        median(loads).as_secs_f64() * 1e3
    );
    println!(
        "  effective_permissions, cold:         {} per distinct set ({COLD_SETS} sets of 1-5 roles, avg {:.1} permissions)",
        fmt_per(median(cold), COLD_SETS),
        cold_perm_total as f64 / COLD_SETS as f64
    );
    println!(
        "  effective_permissions, warm memo:    {} per row ({WARM_ROWS} rows over {WARM_SETS} sets)",
        fmt_per(median(warm), WARM_ROWS)
    );
}
