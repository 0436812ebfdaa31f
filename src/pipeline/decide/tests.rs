use super::*;
use proptest::prelude::*;

/// The default policy (inheritance, one SoD rule), where the catalog role `Wrap Up` is
/// protected too: `Employee`, outside the catalog, is kept by a replace as unmanaged anyway.
fn policy() -> &'static Policy {
    static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        let toml = include_str!("../../../config/policy.toml").replace(
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

fn undo<'a>(before: &'a RoleSet, after: &'a RoleSet) -> Undo<'a> {
    Undo { before, after }
}

#[test]
fn a_revert_puts_back_exactly_what_the_job_found() {
    let p = policy();
    // A replace job took Reporting and Supervisor away and gave Queue Member.
    let before = set(&["Employee", "Reporting", "Supervisor", "Agent"]);
    let after = set(&["Employee", "Agent", "Queue Member"]);
    let d = decide_revert(p, &after, undo(&before, &after), false, false, None);
    assert_eq!(
        d,
        Decision::Write(RoleChange::new(after.clone(), before.clone()))
    );
    let dry = decide_revert(p, &after, undo(&before, &after), false, true, None);
    assert_eq!(dry, Decision::Planned(RoleChange::new(after, before)));
}

#[test]
fn a_user_changed_since_is_left_alone_with_the_difference_named() {
    let p = policy();
    let before = set(&["Employee"]);
    let after = set(&["Employee", "Agent"]);
    // Reporting was granted by hand since the job.
    let current = set(&["Employee", "Agent", "Reporting"]);
    let d = decide_revert(p, &current, undo(&before, &after), false, false, None);
    let Decision::Reject { reason, message } = d else {
        panic!("expected a rejection, got {d:?}")
    };
    assert_eq!(reason, ReasonCode::ChangedSince);
    assert!(
        message.contains("added since: \"Reporting\"; removed since: none"),
        "{message}"
    );
}

#[test]
fn force_applies_the_inverse_delta_on_top_of_the_current_roles() {
    let p = policy();
    let before = set(&["Employee", "Wrap Up"]);
    let after = set(&["Employee", "Agent"]);
    let current = set(&["Employee", "Agent", "Reporting"]);
    let d = decide_revert(p, &current, undo(&before, &after), true, false, None);
    // Agent (added by the job) goes, Wrap Up (removed by it) comes back, Reporting stays.
    assert_eq!(
        d,
        Decision::Write(change(
            &["Employee", "Agent", "Reporting"],
            &["Employee", "Reporting", "Wrap Up"]
        ))
    );
}

#[test]
fn a_user_already_back_is_unchanged_or_already_applied_by_an_earlier_attempt() {
    let p = policy();
    let before = set(&["Employee"]);
    let after = set(&["Employee", "Agent"]);
    for force in [false, true] {
        let d = decide_revert(p, &before, undo(&before, &after), force, false, None);
        assert_eq!(d, Decision::Unchanged);
    }
    let removed = strings(&["Agent"]);
    let prior = Intent {
        added: &[],
        removed: &removed,
    };
    let d = decide_revert(p, &before, undo(&before, &after), false, false, Some(prior));
    assert_eq!(
        d,
        Decision::AlreadyApplied(change(&["Employee", "Agent"], &["Employee"]))
    );
}

#[test]
fn a_revert_never_writes_a_separation_of_duties_conflict() {
    let p = policy();
    // The job took Reporting Auditor away from a System Administrator.
    let before = set(&["Employee", "System Administrator", "Reporting Auditor"]);
    let after = set(&["Employee", "System Administrator"]);
    let d = decide_revert(p, &after, undo(&before, &after), false, false, None);
    assert!(
        matches!(
            d,
            Decision::Reject {
                reason: ReasonCode::SodConflict,
                ..
            }
        ),
        "{d:?}"
    );
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
        Decision::Write(c)
        | Decision::Planned(c)
        | Decision::AlreadyApplied(c)
        | Decision::AppliedWithConflict { change: c, .. } => Some(c),
        Decision::Unchanged | Decision::Reject { .. } => None,
    }
}

/// The second lie of the chaos soak, as it happened: an approved job granted `System
/// Administrator`; before its chunk committed, a hand change added `Reporting Auditor`;
/// the re-run found the separation-of-duties pair. The grant it made is reported
/// (`applied`, with its diff) and the conflict raised, not `rejected`.
#[test]
fn a_rerun_reports_its_earlier_grant_and_the_conflict_a_hand_change_made() {
    let p = policy();
    let desired = p.expand(&set(&["System Administrator"]));
    let first = decide(p, Mode::Merge, &set(&["Employee"]), &desired, false, None);
    let Decision::Write(written) = first else {
        panic!("expected the grant to be written, got {first:?}")
    };
    assert!(written.added.contains(&"System Administrator".to_owned()));
    let mut now = written.after.clone();
    now.insert("Reporting Auditor".to_owned());
    let prior = Intent {
        added: &written.added,
        removed: &written.removed,
    };
    let rerun = decide(p, Mode::Merge, &now, &desired, false, Some(prior));
    let Decision::AppliedWithConflict {
        change,
        reason,
        message,
    } = rerun
    else {
        panic!("expected the earlier grant reported with a conflict, got {rerun:?}")
    };
    assert_eq!(
        change.added, written.added,
        "the diff the earlier attempt made"
    );
    assert_eq!(change.before, set(&["Employee", "Reporting Auditor"]));
    assert_eq!(change.after, now);
    assert_eq!(reason, ReasonCode::SodConflict);
    assert!(!message.is_empty());
    // Without the intent, the same user is refused: the decision the lie came from.
    assert!(matches!(
        decide(p, Mode::Merge, &now, &desired, false, None),
        Decision::Reject { .. }
    ));
}

/// An earlier write landed and a hand change since asks for more: one record covers both
/// writes, from the roles before the first to the roles after the second.
#[test]
fn a_rerun_with_more_to_write_records_both_writes_as_one() {
    let p = policy();
    let added = strings(&["Agent"]);
    let prior = Intent {
        added: &added,
        removed: &[],
    };
    // Replace: the job added Agent, then someone granted Reporting by hand.
    let d = decide(
        p,
        Mode::Replace,
        &set(&["Agent", "Employee", "Reporting"]),
        &set(&["Agent"]),
        false,
        Some(prior),
    );
    assert_eq!(
        d,
        Decision::Write(change(&["Employee", "Reporting"], &["Agent", "Employee"]))
    );
}

/// Found by the chaos run (seed 12933376658643440196): a cancelled revert on the
/// Authorization path had granted two of a user's roles when the cancel stopped the call
/// that was to remove a third; the user was recorded `cancelled`. The part that landed is
/// the job's write: `applied`, with exactly that diff.
#[test]
fn a_cancel_records_the_part_of_a_write_that_landed() {
    let (added, removed) = (strings(&["Agent", "Queue Member"]), strings(&["Reporting"]));
    let prior = Intent {
        added: &added,
        removed: &removed,
    };
    // Both grants landed; the removal was never sent.
    let now = set(&["Agent", "Employee", "Queue Member", "Reporting"]);
    assert_eq!(
        settled(&now, prior),
        Some(change(
            &["Employee", "Reporting"],
            &["Agent", "Employee", "Queue Member", "Reporting"]
        ))
    );
    // All of it landed.
    let all = set(&["Agent", "Employee", "Queue Member"]);
    assert_eq!(
        settled(&all, prior),
        Some(change(
            &["Employee", "Reporting"],
            &["Agent", "Employee", "Queue Member"]
        ))
    );
    // None of it: nothing was written.
    assert_eq!(settled(&set(&["Employee", "Reporting"]), prior), None);
}

/// A re-run after a stop between two calls of one user's change on the Authorization path:
/// one record covers the part that landed and the rest written now.
#[test]
fn a_rerun_after_a_partial_write_records_the_whole_change() {
    let p = policy();
    let (added, removed) = (strings(&["Agent"]), strings(&["Reporting"]));
    let prior = Intent {
        added: &added,
        removed: &removed,
    };
    // The removal landed, the grant did not.
    let d = decide(
        p,
        Mode::Replace,
        &set(&["Employee"]),
        &set(&["Agent"]),
        false,
        Some(prior),
    );
    assert_eq!(
        d,
        Decision::Write(change(&["Employee", "Reporting"], &["Agent", "Employee"]))
    );
}

/// A recorded intent, owned.
type Prior = Option<(Vec<String>, Vec<String>)>;

fn case() -> impl Strategy<Value = (Mode, RoleSet, RoleSet, bool, Prior)> {
    let intent = prop::option::of(
        (roles(), roles()).prop_map(|(a, r)| (a.into_iter().collect(), r.into_iter().collect())),
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
    fn a_revert_of_a_revert_leads_back_to_what_the_job_left(
        (before, after, dry_run) in (roles(), roles(), any::<bool>())
    ) {
        let p = policy();
        // The revert, on a user still as the job left them: back to `before`, or refused
        // for a conflict; never anything else.
        match decide_revert(p, &after, Undo { before: &before, after: &after }, false, dry_run, None) {
            Decision::Write(c) | Decision::Planned(c) => {
                prop_assert_eq!(&c.after, &before);
                // Its own revert (what it found: `after`; what it left: `before`).
                let again = decide_revert(p, &before, Undo { before: &after, after: &before }, false, false, None);
                match again {
                    Decision::Write(c) => prop_assert_eq!(&c.after, &after),
                    Decision::Reject { reason, .. } => prop_assert_eq!(reason, ReasonCode::SodConflict),
                    other => prop_assert!(false, "{other:?}"),
                }
            }
            Decision::Unchanged => prop_assert_eq!(&before, &after),
            Decision::Reject { reason, .. } => prop_assert_eq!(reason, ReasonCode::SodConflict),
            Decision::AlreadyApplied(_) | Decision::AppliedWithConflict { .. } => {
                prop_assert!(false, "no intent was given")
            }
        }
    }

    #[test]
    fn without_force_a_changed_user_is_never_written(
        (before, after, current, dry_run) in (roles(), roles(), roles(), any::<bool>())
    ) {
        let p = policy();
        let d = decide_revert(p, &current, Undo { before: &before, after: &after }, false, dry_run, None);
        if let Decision::Write(c) | Decision::Planned(c) = &d {
            prop_assert_eq!(&current, &after);
            prop_assert_eq!(&c.after, &before);
        }
    }

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
            // Before the write, or before the earlier write that landed (one record).
            let before = match &intent {
                Some((added, removed))
                    if matches!(d, Decision::Write(_))
                        && Intent { added, removed }.landed_on(&current) =>
                {
                    Intent { added, removed }.before(&current)
                }
                _ => current.clone(),
            };
            // (When both writes together change nothing, the write alone is recorded.)
            prop_assert!(c.before == before || c.before == current, "{c:?}");
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
        // (A conflict found after an earlier write leaves the user as they are: refused.)
        if let Some(c) = change_of(&d)
            && !matches!(d, Decision::AppliedWithConflict { .. })
        {
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
        let refused = matches!(
            d,
            Decision::Reject { .. } | Decision::AppliedWithConflict { .. }
        );
        prop_assert_eq!(refused, broken);
    }

    /// The second lie of the chaos soak: a re-run that finds the earlier attempt's write
    /// in place never reports it as not made (`rejected`, `unchanged`), whatever happened
    /// to the user since.
    #[test]
    fn a_write_an_earlier_attempt_made_is_never_reported_as_not_made(
        (mode, current, desired, dry_run, intent) in case()
    ) {
        let p = policy();
        let d = run(p, mode, &current, &desired, dry_run, &intent);
        let landed = intent.as_ref().is_some_and(|(added, removed)| {
            Intent { added, removed }.landed_on(&current)
        });
        if landed {
            prop_assert!(
                !matches!(d, Decision::Reject { .. } | Decision::Unchanged),
                "{d:?}"
            );
        }
    }

    /// A cancel reports a write applied exactly when some part of it is in place, with
    /// only roles of that write in its diff.
    #[test]
    fn a_cancel_records_only_what_landed(
        (current, intent) in (roles(), (roles(), roles()))
    ) {
        let (added, removed): (Vec<String>, Vec<String>) =
            (intent.0.into_iter().collect(), intent.1.difference(&current).cloned().collect());
        let prior = Intent { added: &added, removed: &removed };
        match settled(&current, prior) {
            Some(c) => {
                prop_assert_eq!(&c.after, &current);
                for r in &c.added {
                    prop_assert!(added.contains(r), "{r} was not the job's to add");
                }
                for r in &c.removed {
                    prop_assert!(removed.contains(r), "{r} was not the job's to remove");
                }
            }
            None => prop_assert!(!prior.landed_on(&current) || removed.iter().all(|r| added.contains(r))),
        }
    }

    #[test]
    fn an_intent_only_ever_adds_the_earlier_write_to_the_decision(
        (mode, current, desired, dry_run, intent) in case()
    ) {
        let p = policy();
        let d = run(p, mode, &current, &desired, dry_run, &intent);
        let without = decide(p, mode, &current, &desired, dry_run, None);
        match (&d, &without) {
            (Decision::AlreadyApplied(c), Decision::Unchanged) => {
                prop_assert!(intent.is_some());
                prop_assert_eq!(&c.after, &current);
            }
            (Decision::AppliedWithConflict { change, reason, .. }, Decision::Reject { reason: r, .. }) => {
                prop_assert!(intent.is_some());
                prop_assert_eq!(&change.after, &current);
                prop_assert_eq!(reason, r);
            }
            // One record for both writes: the same final set as the write alone.
            (Decision::Write(c), Decision::Write(w)) => prop_assert_eq!(&c.after, &w.after),
            (other, without) => prop_assert_eq!(other, without),
        }
    }
}
