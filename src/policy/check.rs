//! `rolesync policy check`: a human-readable report on a policy file.

use std::fmt::Write as _;
use std::path::Path;

use super::{Policy, RoleSet};

/// Loads the policy at `path` and renders a report; the bool is true when the policy is valid.
///
/// Valid: a header (path, fingerprint, settings), then a table of every role with its Genesys
/// name, the roles it inherits (transitively) and its effective permission count, then the
/// tiers and the SoD rules. Invalid: a header line, then every problem, one per line.
pub fn check_report(path: &Path) -> (String, bool) {
    match Policy::load(path) {
        Ok(policy) => (render_valid(path, &policy), true),
        Err(err) => {
            let n = err.problems.len();
            let mut out = format!(
                "{}: invalid policy, {n} problem{}\n",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            for problem in &err.problems {
                out.push_str(problem);
                out.push('\n');
            }
            (out, false)
        }
    }
}

fn join_or_dash<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let joined = items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if joined.is_empty() {
        "-".to_owned()
    } else {
        joined
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn render_valid(path: &Path, policy: &Policy) -> String {
    let mut out = String::new();
    let approval = policy.approval();
    // `write!` into a String cannot fail; the results are discarded on purpose.
    let _ = writeln!(out, "{}: valid policy", path.display());
    let _ = writeln!(out, "fingerprint: sha256:{}", policy.fingerprint());
    let _ = writeln!(out, "expand_inherited: {}", policy.expand_inherited());
    let _ = writeln!(
        out,
        "protected_roles: {}",
        join_or_dash(policy.protected_roles())
    );
    let _ = writeln!(
        out,
        "approval: max_removal_fraction = {}, max_removed_users = {}",
        approval.max_removal_fraction, approval.max_removed_users
    );

    let roles = policy.roles();
    let _ = writeln!(out, "\nroles ({}):", roles.len());
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|role| {
            let single = RoleSet::from([role.name.clone()]);
            vec![
                role.name.clone(),
                join_or_dash(&policy.ancestors(&role.name)),
                policy.effective_permissions(&single).len().to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "GENESYS ROLE",
            "INHERITS (transitive)",
            "EFFECTIVE PERMISSIONS",
        ],
        &rows,
    );

    let tiers = policy.tiers();
    let _ = writeln!(out, "\ntiers ({}):", tiers.len());
    let rows: Vec<Vec<String>> = tiers
        .iter()
        .map(|t| vec![t.name.clone(), join_or_dash(&t.roles)])
        .collect();
    table(&mut out, &["TIER", "ROLES ALLOWED"], &rows);

    let sod = policy.sod_rules();
    let _ = writeln!(out, "\nsod rules ({}):", sod.len());
    let rows: Vec<Vec<String>> = sod
        .iter()
        .map(|r| vec![r.name.clone(), join_or_dash(&r.roles), r.reason.clone()])
        .collect();
    table(
        &mut out,
        &["RULE", "ROLES (not all together)", "REASON"],
        &rows,
    );
    out
}
