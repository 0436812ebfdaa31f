//! What to do with one user, given the roles the target holds for them now. A pure function of
//! its inputs: no call, no store, no clock, so that every branch is tested here and the sync
//! worker only acts on the answer (`sync::sync_user`).
//!
//! The worker decides again after each version conflict, on the roles it re-read: the decision
//! is always about what the target holds at that moment, so a concurrent change by someone else
//! is never overwritten blindly.

use crate::domain::{Mode, ReasonCode};
use crate::policy::{Policy, RoleChange, RoleSet};

/// What an earlier attempt of the user's chunk recorded before writing the user (its "intent"):
/// the roles it was adding and removing. That attempt died before recording the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Intent<'a> {
    pub(crate) added: &'a [String],
    pub(crate) removed: &'a [String],
}

/// The decision for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write `after`. The change is never empty and `before` is what the target holds.
    Write(RoleChange),
    /// The user already holds the roles the job leads to, and no earlier attempt wrote them.
    Unchanged,
    /// A dry run: `after` is what a real run would write (never empty).
    Planned(RoleChange),
    /// The user already holds the roles the job leads to because an earlier attempt of this job
    /// wrote them: the write was this job's, reported with the diff that attempt recorded.
    /// `after` is what the target holds.
    AlreadyApplied(RoleChange),
    /// The roles the job leads to break a separation-of-duties rule: nothing is written.
    Reject { reason: ReasonCode, message: String },
}

/// Decides for a user holding `current` whom the job wants to hold `desired` (already expanded).
///
/// In order: the final set (`Policy::final_roles`); a separation-of-duties rule broken by it
/// rejects the user, dry run or not; an empty diff is `AlreadyApplied` when an earlier attempt
/// recorded an intent, else `Unchanged`; otherwise `Planned` in a dry run, else `Write`.
pub(crate) fn decide(
    policy: &Policy,
    mode: Mode,
    current: &RoleSet,
    desired: &RoleSet,
    dry_run: bool,
    prior: Option<Intent<'_>>,
) -> Decision {
    let after = policy.final_roles(mode, current, desired);
    if let Some(rule) = policy.sod_violation(&after) {
        return Decision::Reject {
            reason: ReasonCode::SodConflict,
            message: rule.conflict_message(),
        };
    }
    let change = RoleChange::new(current.clone(), after);
    if change.is_empty() {
        return match prior {
            Some(intent) => {
                // The roles before that write: undo what it recorded on what is there now.
                let mut before: RoleSet = current
                    .iter()
                    .filter(|r| !intent.added.contains(r))
                    .cloned()
                    .collect();
                before.extend(intent.removed.iter().cloned());
                Decision::AlreadyApplied(RoleChange::new(before, change.after))
            }
            None => Decision::Unchanged,
        };
    }
    if dry_run {
        Decision::Planned(change)
    } else {
        Decision::Write(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The default policy (inheritance, one SoD rule), where the catalog role `Wrap Up` is
    /// protected too: `Employee`, outside the catalog, is kept by a replace as unmanaged anyway.
    fn policy() -> &'static Policy {
        static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        POLICY.get_or_init(|| {
            let toml = include_str!("../../config/policy.toml").replace(
                r#"protected_roles = ["Employee"]"#,
                r#"protected_roles = ["Employee", "Wrap Up"]"#,
            );
            match Policy::from_toml_str(&toml) {
                Ok(p) if p.is_managed("Wrap Up") && p.protected_roles().contains("Wrap Up") => p,
                Ok(p) => panic!("the test policy must protect a catalog role: {p:?}"),
                Err(e) => panic!("the test policy must load: {e}"),
            }
        })
    }

    fn set(roles: &[&str]) -> RoleSet {
        roles.iter().map(|r| (*r).to_owned()).collect()
    }

    fn strings(roles: &[&str]) -> Vec<String> {
        roles.iter().map(|r| (*r).to_owned()).collect()
    }

    fn change(before: &[&str], after: &[&str]) -> RoleChange {
        RoleChange::new(set(before), set(after))
    }

    #[test]
    fn a_missing_role_is_written() {
        let p = policy();
        let d = decide(
            p,
            Mode::Merge,
            &set(&["Employee"]),
            &set(&["Agent"]),
            false,
            None,
        );
        assert_eq!(
            d,
            Decision::Write(change(&["Employee"], &["Agent", "Employee"]))
        );
    }

    #[test]
    fn replace_writes_the_removal_of_an_unwanted_managed_role() {
        let p = policy();
        let d = decide(
            p,
            Mode::Replace,
            &set(&["Agent", "Employee", "Hand Granted", "Reporting"]),
            &set(&["Agent"]),
            false,
            None,
        );
        let Decision::Write(c) = d else {
            panic!("expected a write, got {d:?}")
        };
        assert_eq!(c.removed, strings(&["Reporting"]));
        assert!(c.added.is_empty());
        assert_eq!(c.after, set(&["Agent", "Employee", "Hand Granted"]));
    }

    #[test]
    fn replace_keeps_a_protected_catalog_role() {
        let d = decide(
            policy(),
            Mode::Replace,
            &set(&["Agent", "Employee", "Wrap Up"]),
            &set(&["Agent"]),
            false,
            None,
        );
        assert_eq!(d, Decision::Unchanged);
    }

    #[test]
    fn a_user_already_right_is_unchanged() {
        let p = policy();
        let current = set(&["Agent", "Employee"]);
        for mode in [Mode::Merge, Mode::Replace] {
            for dry_run in [false, true] {
                let d = decide(p, mode, &current, &set(&["Agent"]), dry_run, None);
                assert_eq!(d, Decision::Unchanged, "{mode} dry_run={dry_run}");
            }
        }
    }

    #[test]
    fn a_dry_run_plans_what_a_real_run_would_write() {
        let p = policy();
        let (current, desired) = (set(&["Employee"]), set(&["Agent"]));
        let real = decide(p, Mode::Merge, &current, &desired, false, None);
        let dry = decide(p, Mode::Merge, &current, &desired, true, None);
        match (real, dry) {
            (Decision::Write(w), Decision::Planned(planned)) => assert_eq!(w, planned),
            other => panic!("expected a write and a plan, got {other:?}"),
        }
    }

    #[test]
    fn a_write_recorded_by_a_dead_attempt_is_already_applied_with_its_diff() {
        let p = policy();
        // The attempt added `Agent` and removed `Reporting`, then died; the target now holds
        // what the job wants.
        let (added, removed) = (strings(&["Agent"]), strings(&["Reporting"]));
        let prior = Intent {
            added: &added,
            removed: &removed,
        };
        let current = set(&["Agent", "Employee"]);
        let d = decide(
            p,
            Mode::Replace,
            &current,
            &set(&["Agent"]),
            false,
            Some(prior),
        );
        assert_eq!(
            d,
            Decision::AlreadyApplied(change(&["Employee", "Reporting"], &["Agent", "Employee"]))
        );
    }

    #[test]
    fn an_intent_does_not_stop_a_write_still_needed() {
        let p = policy();
        let added = strings(&["Agent"]);
        let prior = Intent {
            added: &added,
            removed: &[],
        };
        let d = decide(
            p,
            Mode::Merge,
            &set(&["Employee"]),
            &set(&["Agent"]),
            false,
            Some(prior),
        );
        assert_eq!(
            d,
            Decision::Write(change(&["Employee"], &["Agent", "Employee"]))
        );
    }

    #[test]
    fn a_final_set_breaking_separation_of_duties_is_rejected_even_in_a_dry_run() {
        let p = policy();
        // Merge keeps `System Administrator`; with `Reporting Auditor` the rule is broken.
        for dry_run in [false, true] {
            let d = decide(
                p,
                Mode::Merge,
                &set(&["Employee", "System Administrator"]),
                &set(&["Reporting Auditor", "Reporting"]),
                dry_run,
                None,
            );
            let Decision::Reject { reason, message } = d else {
                panic!("expected a rejection, got {d:?}")
            };
            assert_eq!(reason, ReasonCode::SodConflict);
            assert_eq!(
                message,
                "separation of duties \"approve-own-admin\": Reporting Auditor + System \
                 Administrator (An administrator must not audit the grants they make)"
            );
        }
        // Replace drops `System Administrator`: no conflict.
        let d = decide(
            p,
            Mode::Replace,
            &set(&["Employee", "System Administrator"]),
            &set(&["Reporting Auditor", "Reporting"]),
            false,
            None,
        );
        assert!(matches!(d, Decision::Write(_)), "{d:?}");
    }

    /// Catalog roles, the protected role and two roles the policy does not manage.
    const UNIVERSE: [&str; 10] = [
        "Agent",
        "Queue Member",
        "Wrap Up",
        "Reporting",
        "Supervisor",
        "System Administrator",
        "Reporting Auditor",
        "Employee",
        "Hand Granted",
        "Legacy",
    ];

    fn roles() -> impl Strategy<Value = RoleSet> {
        prop::sample::subsequence(UNIVERSE.to_vec(), 0..=UNIVERSE.len())
            .prop_map(|v| v.into_iter().map(str::to_owned).collect())
    }

    /// What a job may want: catalog roles only (validation refuses the others), expanded as
    /// the pipeline expands them.
    fn desired() -> impl Strategy<Value = RoleSet> {
        prop::sample::subsequence(UNIVERSE[..7].to_vec(), 0..=3)
            .prop_map(|v| policy().expand(&v.into_iter().map(str::to_owned).collect()))
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop::sample::select(vec![Mode::Merge, Mode::Replace])
    }

    /// The change a decision would write or report, if any.
    fn change_of(d: &Decision) -> Option<&RoleChange> {
        match d {
            Decision::Write(c) | Decision::Planned(c) | Decision::AlreadyApplied(c) => Some(c),
            Decision::Unchanged | Decision::Reject { .. } => None,
        }
    }

    /// A recorded intent, owned.
    type Prior = Option<(Vec<String>, Vec<String>)>;

    fn case() -> impl Strategy<Value = (Mode, RoleSet, RoleSet, bool, Prior)> {
        let intent = prop::option::of(
            (roles(), roles())
                .prop_map(|(a, r)| (a.into_iter().collect(), r.into_iter().collect())),
        );
        (mode(), roles(), desired(), any::<bool>(), intent)
    }

    fn run(
        p: &Policy,
        mode: Mode,
        current: &RoleSet,
        desired: &RoleSet,
        dry_run: bool,
        intent: &Prior,
    ) -> Decision {
        let prior = intent
            .as_ref()
            .map(|(added, removed)| Intent { added, removed });
        decide(p, mode, current, desired, dry_run, prior)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn merge_never_removes_a_role(
            (current, desired, dry_run) in (roles(), desired(), any::<bool>())
        ) {
            let p = policy();
            let d = decide(p, Mode::Merge, &current, &desired, dry_run, None);
            if let Some(c) = change_of(&d) {
                prop_assert!(c.removed.is_empty(), "{d:?}");
                prop_assert!(c.after.is_superset(&current));
            }
        }

        #[test]
        fn replace_never_removes_unmanaged_or_protected_roles(
            (current, desired, dry_run) in (roles(), desired(), any::<bool>())
        ) {
            let p = policy();
            let d = decide(p, Mode::Replace, &current, &desired, dry_run, None);
            if let Some(c) = change_of(&d) {
                for r in &c.removed {
                    prop_assert!(p.is_managed(r) && !p.protected_roles().contains(r), "{r} removed: {d:?}");
                }
                prop_assert!(c.after.is_superset(&desired));
            }
        }

        #[test]
        fn a_write_changes_something_and_holds_exactly_the_differences(
            (mode, current, desired, dry_run, intent) in case()
        ) {
            let p = policy();
            let d = run(p, mode, &current, &desired, dry_run, &intent);
            if let Decision::Write(c) | Decision::Planned(c) = &d {
                prop_assert_ne!(&c.before, &c.after);
                prop_assert_eq!(&c.before, &current);
                prop_assert_eq!(&c.after, &p.final_roles(mode, &current, &desired));
                let added: Vec<String> = c.after.difference(&c.before).cloned().collect();
                let removed: Vec<String> = c.before.difference(&c.after).cloned().collect();
                prop_assert_eq!(&c.added, &added);
                prop_assert_eq!(&c.removed, &removed);
            }
        }

        #[test]
        fn a_dry_run_never_writes(
            (mode, current, desired, _dry_run, intent) in case()
        ) {
            let p = policy();
            let d = run(p, mode, &current, &desired, true, &intent);
            prop_assert!(!matches!(d, Decision::Write(_)), "{d:?}");
        }

        #[test]
        fn deciding_again_on_the_result_changes_nothing(
            (mode, current, desired, dry_run, intent) in case()
        ) {
            let p = policy();
            let d = run(p, mode, &current, &desired, dry_run, &intent);
            if let Some(c) = change_of(&d) {
                let again = decide(p, mode, &c.after, &desired, dry_run, None);
                prop_assert_eq!(again, Decision::Unchanged);
            }
        }

        #[test]
        fn rejection_is_the_policy_judging_the_final_set(
            (mode, current, desired, dry_run, intent) in case()
        ) {
            let p = policy();
            let d = run(p, mode, &current, &desired, dry_run, &intent);
            let after = p.final_roles(mode, &current, &desired);
            let broken = p.sod_violation(&after).is_some();
            prop_assert_eq!(matches!(d, Decision::Reject { .. }), broken);
        }

        #[test]
        fn an_intent_only_explains_a_user_already_right(
            (mode, current, desired, dry_run, intent) in case()
        ) {
            let p = policy();
            let d = run(p, mode, &current, &desired, dry_run, &intent);
            let without = decide(p, mode, &current, &desired, dry_run, None);
            match &d {
                Decision::AlreadyApplied(c) => {
                    prop_assert!(intent.is_some());
                    prop_assert_eq!(&without, &Decision::Unchanged);
                    prop_assert_eq!(&c.after, &current);
                }
                other => prop_assert_eq!(other, &without),
            }
        }
    }
}
