//! Unit tests of loading, validation and resolution, mostly on the default policy.

use super::*;

const DEFAULT: &str = include_str!("../../config/policy.toml");

fn default_policy() -> Policy {
    match Policy::from_toml_str(DEFAULT) {
        Ok(p) => p,
        Err(e) => panic!("default policy must load: {e}"),
    }
}

fn set(roles: &[&str]) -> RoleSet {
    roles.iter().map(|r| (*r).to_owned()).collect()
}

fn perms(perms: &[&str]) -> PermissionSet {
    perms.iter().map(|p| (*p).to_owned()).collect()
}

/// The problems of a policy that must fail to load.
fn problems(toml: &str) -> Vec<String> {
    match Policy::from_toml_str(toml) {
        Ok(_) => panic!("policy should not load:\n{toml}"),
        Err(e) => e.problems,
    }
}

fn has(problems: &[String], wanted: &str) -> bool {
    problems.iter().any(|p| p == wanted)
}

#[track_caller]
fn assert_has(problems: &[String], wanted: &str) {
    assert!(
        has(problems, wanted),
        "missing problem {wanted:?} in {problems:#?}"
    );
}

// ---- loading -------------------------------------------------------------------------------

#[test]
fn default_policy_loads_with_its_tiers_roles_and_rule() {
    let p = default_policy();
    assert!(p.expand_inherited());
    assert_eq!(p.protected_roles(), &set(&["Employee"]));
    let tiers: Vec<&str> = p.tiers().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tiers,
        ["Standard Agent", "Supervisor", "Administrator", "Auditor"]
    );
    assert_eq!(p.roles().len(), 7);
    assert_eq!(
        p.role("Supervisor").map(|r| r.inherits.clone()),
        Some(vec!["Agent".into(), "Reporting".into()])
    );
    assert_eq!(p.sod_rules().len(), 1);
    assert_eq!(p.sod_rules()[0].name, "approve-own-admin");
    assert_eq!(p.approval().max_removal_fraction, 0.2);
    assert_eq!(p.approval().max_removed_users, 500);
    assert!(p.is_managed("Agent"));
    assert!(!p.is_managed("Employee"));
    assert!(p.tier("Nope").is_none());
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let p = Policy::from_toml_str("").map_err(|e| e.to_string());
    let Ok(p) = p else { panic!("{p:?}") };
    assert!(p.expand_inherited());
    assert_eq!(p.protected_roles(), &set(&["Employee"]));
    assert_eq!(p.approval().max_removal_fraction, 0.2);
    assert_eq!(p.approval().max_removed_users, 500);
    assert!(p.roles().is_empty());
}

#[test]
fn fingerprint_is_sha256_of_the_source() {
    let p = default_policy();
    let fp = p.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    let Ok(q) = Policy::from_toml_str(&format!("{DEFAULT}\n# changed\n")) else {
        panic!()
    };
    assert_ne!(q.fingerprint(), fp);
    assert_eq!(default_policy().fingerprint(), fp);
    // Known vector: SHA-256 of the empty string.
    let Ok(empty) = Policy::from_toml_str("") else {
        panic!()
    };
    assert_eq!(
        empty.fingerprint(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn cycle_is_reported_with_its_path() {
    let ps = problems(
        r#"
[[roles]]
name = "A"
inherits = ["B"]
[[roles]]
name = "B"
inherits = ["C"]
[[roles]]
name = "C"
inherits = ["A"]
[[roles]]
name = "D"
inherits = ["A"]
"#,
    );
    assert_eq!(ps, vec!["inheritance cycle: A -> B -> C -> A".to_owned()]);
}

#[test]
fn self_inheritance_is_a_cycle() {
    let ps = problems("[[roles]]\nname = \"A\"\ninherits = [\"A\"]\n");
    assert_eq!(ps, vec!["inheritance cycle: A -> A".to_owned()]);
}

#[test]
fn cycle_path_starts_at_the_earliest_declared_role() {
    let ps = problems(
        r#"
[[roles]]
name = "Z"
inherits = ["Y"]
[[roles]]
name = "X"
inherits = ["Z"]
[[roles]]
name = "Y"
inherits = ["X"]
"#,
    );
    assert_eq!(ps, vec!["inheritance cycle: Z -> Y -> X -> Z".to_owned()]);
}

#[test]
fn two_separate_cycles_are_both_reported() {
    let ps = problems(
        r#"
[[roles]]
name = "A"
inherits = ["B"]
[[roles]]
name = "B"
inherits = ["A"]
[[roles]]
name = "C"
inherits = ["D"]
[[roles]]
name = "D"
inherits = ["C"]
"#,
    );
    assert_eq!(
        ps,
        vec![
            "inheritance cycle: A -> B -> A".to_owned(),
            "inheritance cycle: C -> D -> C".to_owned()
        ]
    );
}

#[test]
fn unknown_parent_is_reported() {
    let ps = problems("[[roles]]\nname = \"X\"\ninherits = [\"Y\"]\n");
    assert_eq!(ps, vec![r#"role "X" inherits unknown role "Y""#.to_owned()]);
}

#[test]
fn tier_with_unknown_role_is_reported() {
    let ps = problems(
        r#"
[[tiers]]
name = "Basic"
roles = ["Agent", "Ghost", "Employee"]
[[roles]]
name = "Agent"
"#,
    );
    // `Employee` is protected, so a tier may list it without it being in the catalog.
    assert_eq!(
        ps,
        vec![r#"tier "Basic" allows unknown role "Ghost""#.to_owned()]
    );
}

#[test]
fn tier_allowing_a_role_without_its_ancestors_is_reported() {
    let ps = problems(
        r#"
[[tiers]]
name = "Basic"
roles = ["Child"]
[[roles]]
name = "Parent"
[[roles]]
name = "Child"
inherits = ["Parent"]
"#,
    );
    assert_eq!(
        ps,
        vec![
            r#"tier "Basic" allows "Child" but not its inherited role(s) "Parent", so "Child" can never be granted under it"#
                .to_owned()
        ]
    );
}

#[test]
fn sod_problems_are_reported() {
    let ps = problems(
        r#"
[[roles]]
name = "A"
[[roles]]
name = "B"
[[sod]]
name = "ghost"
roles = ["A", "Ghost"]
reason = "r"
[[sod]]
name = "lonely"
roles = ["A", "A"]
reason = "r"
"#,
    );
    assert_eq!(
        ps,
        vec![
            r#"sod rule "ghost" names unknown role "Ghost""#.to_owned(),
            r#"sod rule "lonely" needs at least 2 distinct roles, has 1"#.to_owned(),
        ]
    );
}

#[test]
fn sod_rule_violated_by_a_single_role_is_reported() {
    let ps = problems(
        r#"
[[roles]]
name = "Agent"
[[roles]]
name = "Supervisor"
inherits = ["Agent"]
[[sod]]
name = "no-agent-supervisors"
roles = ["Agent", "Supervisor"]
reason = "r"
"#,
    );
    assert_eq!(
        ps,
        vec![
            r#"role "Supervisor" alone violates sod rule "no-agent-supervisors" (it holds all of its roles through inheritance)"#
                .to_owned()
        ]
    );
}

#[test]
fn duplicates_are_reported() {
    let ps = problems(
        r#"
[[tiers]]
name = "T"
roles = []
[[tiers]]
name = "T"
roles = []
[[roles]]
name = "A"
[[roles]]
name = "B"
[[roles]]
name = "A"
[[roles]]
name = "A"
[[sod]]
name = "S"
roles = ["A", "B"]
[[sod]]
name = "S"
roles = ["A", "B"]
"#,
    );
    assert_eq!(
        ps,
        vec![
            r#"duplicate role "A" (declared 3 times)"#.to_owned(),
            r#"duplicate tier "T" (declared 2 times)"#.to_owned(),
            r#"duplicate sod rule "S" (declared 2 times)"#.to_owned(),
        ]
    );
}

#[test]
fn duplicate_parent_and_bad_names_are_reported() {
    let ps = problems(
        r#"
[[roles]]
name = "A"
[[roles]]
name = "B"
inherits = ["A", "A"]
[[roles]]
name = "Agent "
[[roles]]
name = ""
"#,
    );
    assert_eq!(
        ps,
        vec![
            r#"role "Agent " has leading or trailing whitespace in its name"#.to_owned(),
            "role #4 has an empty name".to_owned(),
            r#"role "B" inherits "A" more than once"#.to_owned(),
        ]
    );
}

#[test]
fn malformed_permissions_are_reported() {
    let ps = problems(
        r#"
[[roles]]
name = "R"
permissions = ["ok:fine:view", "a:b", "a:b:c:d", "a::c", "a:vi*ew:c", "a:b c:d", "*:*:*", "x-y:a_b:*"]
"#,
    );
    assert_eq!(
        ps,
        vec![
            r#"role "R" has malformed permission "a:b": expected 3 `:`-separated segments (domain:entity:action), found 2"#.to_owned(),
            r#"role "R" has malformed permission "a:b:c:d": expected 3 `:`-separated segments (domain:entity:action), found 4"#.to_owned(),
            r#"role "R" has malformed permission "a::c": the entity segment is empty"#.to_owned(),
            r#"role "R" has malformed permission "a:vi*ew:c": `*` must be a whole segment, not part of the entity "vi*ew""#.to_owned(),
            r#"role "R" has malformed permission "a:b c:d": invalid character ' ' in the entity "b c""#.to_owned(),
        ]
    );
}

#[test]
fn approval_fraction_out_of_range_is_reported() {
    let ps = problems("[approval]\nmax_removal_fraction = 1.5\n");
    assert_eq!(
        ps,
        vec!["approval.max_removal_fraction must be between 0 and 1, got 1.5".to_owned()]
    );
    let ps = problems("[approval]\nmax_removal_fraction = nan\n");
    assert_eq!(
        ps,
        vec!["approval.max_removal_fraction must be between 0 and 1, got NaN".to_owned()]
    );
    let ok =
        Policy::from_toml_str("[approval]\nmax_removal_fraction = 1.0\nmax_removed_users = 0\n");
    assert!(ok.is_ok());
}

#[test]
fn unknown_key_is_reported_by_name_with_position() {
    let ps = problems("[[roles]]\nname = \"A\"\ninherit = [\"B\"]\n");
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(
        ps[0].starts_with("line 3, column 1: unknown field `inherit`"),
        "{ps:?}"
    );
    let ps = problems("expand_inherted = false\n");
    assert!(
        ps[0].starts_with("line 1, column 1: unknown field `expand_inherted`"),
        "{ps:?}"
    );
    let ps = problems("[approval]\nmax_fraction = 0.5\n");
    assert!(
        ps[0].starts_with("line 2, column 1: unknown field `max_fraction`"),
        "{ps:?}"
    );
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let ps = problems("expand_inherited = true\n[[roles]]\nname = \"A\n");
    assert_eq!(ps.len(), 1);
    assert!(ps[0].starts_with("line 3, column "), "{ps:?}");
    let ps = problems("expand_inherited = \"yes\"\n");
    assert!(ps[0].starts_with("line 1, column 20: "), "{ps:?}");
}

#[test]
fn all_problems_are_reported_together() {
    let ps = problems(
        r#"
[[tiers]]
name = "T"
roles = ["Nobody"]
[[roles]]
name = "A"
inherits = ["B", "Missing"]
permissions = ["bad"]
[[roles]]
name = "B"
inherits = ["A"]
[[roles]]
name = "B"
[[sod]]
name = "S"
roles = ["A", "Phantom"]
[approval]
max_removal_fraction = -0.1
"#,
    );
    for wanted in [
        r#"duplicate role "B" (declared 2 times)"#,
        r#"role "A" inherits unknown role "Missing""#,
        r#"role "A" has malformed permission "bad": expected 3 `:`-separated segments (domain:entity:action), found 1"#,
        "inheritance cycle: A -> B -> A",
        r#"tier "T" allows unknown role "Nobody""#,
        r#"sod rule "S" names unknown role "Phantom""#,
        "approval.max_removal_fraction must be between 0 and 1, got -0.1",
    ] {
        assert_has(&ps, wanted);
    }
    assert_eq!(ps.len(), 7, "{ps:#?}");
    let err = PolicyError { problems: ps };
    assert!(
        err.to_string()
            .starts_with("invalid policy: duplicate role")
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let Err(e) = Policy::load(Path::new("/nonexistent/policy.toml")) else {
        panic!()
    };
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].starts_with("cannot read policy file \"/nonexistent/policy.toml\""));
}

#[test]
fn load_reads_the_default_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml");
    let p = Policy::load(&path).map_err(|e| e.to_string());
    assert_eq!(
        p.map(|p| p.fingerprint()),
        Ok(default_policy().fingerprint())
    );
}

// ---- resolution ----------------------------------------------------------------------------

#[test]
fn closure_includes_the_role_and_every_ancestor() {
    let p = default_policy();
    assert_eq!(p.closure("Agent"), set(&["Agent"]));
    assert_eq!(
        p.closure("Supervisor"),
        set(&["Supervisor", "Agent", "Reporting"])
    );
    assert_eq!(
        p.closure("System Administrator"),
        set(&["System Administrator", "Supervisor", "Agent", "Reporting"])
    );
    assert_eq!(p.closure("Hand Granted"), set(&["Hand Granted"]));
    assert_eq!(p.ancestors("Supervisor"), set(&["Agent", "Reporting"]));
    assert_eq!(p.ancestors("Hand Granted"), set(&[]));
}

#[test]
fn expand_adds_ancestors_and_keeps_unknown_roles() {
    let p = default_policy();
    assert_eq!(
        p.expand(&set(&["Supervisor", "Wrap Up", "Hand Granted"])),
        set(&[
            "Supervisor",
            "Agent",
            "Reporting",
            "Wrap Up",
            "Hand Granted"
        ])
    );
    let Ok(flat) = Policy::from_toml_str(
        &DEFAULT.replace("expand_inherited = true", "expand_inherited = false"),
    ) else {
        panic!()
    };
    assert!(!flat.expand_inherited());
    assert_eq!(flat.expand(&set(&["Supervisor"])), set(&["Supervisor"]));
}

#[test]
fn supervisor_is_not_entitled_under_standard_agent() {
    let p = default_policy();
    let Some(tier) = p.tier("Standard Agent") else {
        panic!()
    };
    assert_eq!(
        p.not_entitled(tier, &set(&["Supervisor"])),
        ["Reporting", "Supervisor"]
    );
    assert!(
        p.not_entitled(tier, &set(&["Agent", "Queue Member", "Wrap Up"]))
            .is_empty()
    );
    // Protected and hand-granted roles are never reported.
    assert!(
        p.not_entitled(tier, &set(&["Agent", "Employee", "Hand Granted"]))
            .is_empty()
    );
    let Some(admin) = p.tier("Administrator") else {
        panic!()
    };
    assert!(
        p.not_entitled(admin, &set(&["System Administrator"]))
            .is_empty()
    );
    let Some(auditor) = p.tier("Auditor") else {
        panic!()
    };
    assert_eq!(
        p.not_entitled(
            auditor,
            &set(&["System Administrator", "Reporting Auditor"])
        ),
        ["Agent", "Supervisor", "System Administrator"]
    );
}

#[test]
fn sod_violation_sees_inherited_and_current_roles() {
    let p = default_policy();
    // A user holding `Reporting Auditor` who gets `System Administrator` (merge mode).
    let final_roles = set(&["Employee", "Reporting Auditor", "System Administrator"]);
    assert_eq!(
        p.sod_violation(&final_roles).map(|r| r.name.as_str()),
        Some("approve-own-admin")
    );
    assert!(
        p.sod_violation(&set(&["System Administrator", "Reporting"]))
            .is_none()
    );
    assert!(p.sod_violation(&set(&["Reporting Auditor"])).is_none());
}

#[test]
fn sod_violation_through_inheritance_only() {
    let Ok(p) = Policy::from_toml_str(
        r#"
[[roles]]
name = "A"
[[roles]]
name = "B"
[[roles]]
name = "AB-ish"
inherits = ["B"]
[[sod]]
name = "first"
roles = ["A", "B"]
[[sod]]
name = "second"
roles = ["A", "AB-ish"]
"#,
    ) else {
        panic!()
    };
    // `AB-ish` brings `B` along, so the first rule (in file order) is the one reported.
    assert_eq!(
        p.sod_violation(&set(&["A", "AB-ish"]))
            .map(|r| r.name.as_str()),
        Some("first")
    );
}

#[test]
fn effective_permissions_follow_inheritance_and_normalise_wildcards() {
    let p = default_policy();
    assert_eq!(
        *p.effective_permissions(&set(&["Supervisor"])),
        perms(&[
            "analytics:*:view",
            "analytics:report:export",
            "conversation:call:accept",
            "conversation:call:monitor",
            "conversation:message:accept",
            "quality:evaluation:view",
            "routing:queue:join",
            "routing:queue:view",
        ])
    );
    // `routing:*:*` swallows every routing permission inherited from Supervisor and Agent.
    let admin = p.effective_permissions(&set(&["System Administrator"]));
    assert!(admin.contains("routing:*:*"));
    assert!(
        !admin
            .iter()
            .any(|x| x.starts_with("routing:") && x != "routing:*:*"),
        "{admin:?}"
    );
    assert!(admin.contains("directory:*:*"));
    assert!(admin.contains("conversation:call:monitor"));
    // `analytics:*:view` is kept; `analytics:report:export` is not covered by it.
    assert!(admin.contains("analytics:*:view") && admin.contains("analytics:report:export"));
    // Union of two roles; the unknown role and Employee contribute nothing.
    let both = p.effective_permissions(&set(&[
        "Queue Member",
        "Reporting Auditor",
        "Employee",
        "X",
    ]));
    assert!(both.contains("routing:queue:member") && both.contains("audits:*:view"));
    assert!(both.contains("conversation:call:accept") && both.contains("analytics:*:view"));
    assert!(p.effective_permissions(&set(&[])).is_empty());
    assert!(p.effective_permissions(&set(&["Employee"])).is_empty());
}

#[test]
fn normalisation_drops_covered_permissions_across_roles() {
    let Ok(p) = Policy::from_toml_str(
        r#"
[[roles]]
name = "Narrow"
permissions = ["analytics:report:view", "directory:user:edit", "directory:*:view", "billing:invoice:view"]
[[roles]]
name = "Wide"
permissions = ["analytics:*:view", "directory:*:*"]
[[roles]]
name = "All"
permissions = ["*:*:*"]
"#,
    ) else {
        panic!()
    };
    assert_eq!(
        *p.effective_permissions(&set(&["Narrow"])),
        perms(&[
            "analytics:report:view",
            "billing:invoice:view",
            "directory:*:view",
            "directory:user:edit"
        ])
    );
    assert_eq!(
        *p.effective_permissions(&set(&["Narrow", "Wide"])),
        perms(&["analytics:*:view", "billing:invoice:view", "directory:*:*"])
    );
    assert_eq!(
        *p.effective_permissions(&set(&["Narrow", "Wide", "All"])),
        perms(&["*:*:*"])
    );
}

#[test]
fn effective_permissions_are_memoised_and_bounded_memo_can_be_cleared() {
    let p = default_policy();
    let a = p.effective_permissions(&set(&["Supervisor", "Wrap Up"]));
    let b = p.effective_permissions(&set(&["Wrap Up", "Supervisor"]));
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(p.permission_cache_len(), 1);
    p.clear_permission_cache();
    assert_eq!(p.permission_cache_len(), 0);
    let c = p.effective_permissions(&set(&["Supervisor", "Wrap Up"]));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(a, c);
}

#[test]
fn memo_is_shared_across_threads() {
    let p = Arc::new(default_policy());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                p.effective_permissions(&set(&["System Administrator"]))
                    .len()
            })
        })
        .collect();
    let lens: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    assert!(lens.iter().all(|&l| l == lens[0] && l > 0));
    assert_eq!(p.permission_cache_len(), 1);
}

#[test]
fn wildcard_matching() {
    assert!(permission_matches(
        "analytics:*:view",
        "analytics:report:view"
    ));
    assert!(permission_matches("directory:*:*", "directory:user:edit"));
    assert!(permission_matches("directory:*:*", "directory:*:view"));
    assert!(permission_matches("*:*:*", "routing:queue:join"));
    assert!(permission_matches(
        "routing:queue:join",
        "routing:queue:join"
    ));
    assert!(!permission_matches(
        "analytics:report:view",
        "analytics:*:view"
    ));
    assert!(!permission_matches(
        "analytics:*:view",
        "analytics:report:export"
    ));
    assert!(!permission_matches(
        "analytics:*:view",
        "analyticsx:report:view"
    ));
    assert!(!permission_matches("directory:*:view", "directory:*:*"));
    assert!(!permission_matches("a:*", "a:b"));
    assert!(permission_matches("a:*", "a:*"));
    assert!(validate_permission("a:b:c").is_ok());
    assert!(validate_permission("a:b:").is_err());
}

#[test]
fn permission_diff_understands_wildcards() {
    let before = perms(&[
        "analytics:report:view",
        "routing:queue:join",
        "directory:user:edit",
    ]);
    let after = perms(&[
        "analytics:*:view",
        "routing:queue:join",
        "quality:evaluation:view",
    ]);
    let (added, removed) = permission_diff(&before, &after);
    assert_eq!(added, ["analytics:*:view", "quality:evaluation:view"]);
    // `analytics:report:view` is still granted, by the wildcard.
    assert_eq!(removed, ["directory:user:edit"]);
    let (added, removed) = permission_diff(&after, &before);
    assert_eq!(added, ["directory:user:edit"]);
    assert_eq!(removed, ["analytics:*:view", "quality:evaluation:view"]);
    let (added, removed) = permission_diff(&before, &before);
    assert!(added.is_empty() && removed.is_empty());
    let (added, removed) = permission_diff(&PermissionSet::new(), &after);
    assert_eq!(added.len(), 3);
    assert!(removed.is_empty());
}

// ---- views ---------------------------------------------------------------------------------

#[test]
fn summary_lists_everything() {
    let p = default_policy();
    let s = serde_json::to_value(p.summary()).unwrap_or_default();
    assert_eq!(s["expand_inherited"], true);
    assert_eq!(s["protected_roles"], serde_json::json!(["Employee"]));
    assert_eq!(s["tiers"][0]["name"], "Standard Agent");
    assert_eq!(
        s["tiers"][0]["roles"],
        serde_json::json!(["Agent", "Queue Member", "Wrap Up"])
    );
    assert_eq!(s["roles"].as_array().map(Vec::len), Some(7));
    assert_eq!(s["roles"][4]["name"], "Supervisor");
    assert_eq!(
        s["roles"][4]["inherits"],
        serde_json::json!(["Agent", "Reporting"])
    );
    assert_eq!(s["sod"][0]["name"], "approve-own-admin");
    assert_eq!(
        s["sod"][0]["roles"],
        serde_json::json!(["Reporting Auditor", "System Administrator"])
    );
    assert_eq!(s["approval"]["max_removed_users"], 500);
    assert_eq!(s["fingerprint"], p.fingerprint());
}

#[test]
fn role_detail_shows_inheritance_permissions_tiers_and_sod() {
    let p = default_policy();
    let Some(d) = p
        .role_detail("System Administrator")
        .and_then(|d| serde_json::to_value(d).ok())
    else {
        panic!()
    };
    assert_eq!(d["name"], "System Administrator");
    assert_eq!(d["inherits"], serde_json::json!(["Supervisor"]));
    assert_eq!(
        d["ancestors"],
        serde_json::json!(["Agent", "Reporting", "Supervisor"])
    );
    assert_eq!(d["permissions"].as_array().map(Vec::len), Some(4));
    assert!(
        d["effective_permissions"]
            .as_array()
            .is_some_and(|a| a.contains(&"conversation:call:accept".into()))
    );
    assert_eq!(d["tiers"], serde_json::json!(["Administrator"]));
    assert_eq!(d["sod"][0]["name"], "approve-own-admin");
    let Some(r) = p
        .role_detail("Reporting")
        .and_then(|d| serde_json::to_value(d).ok())
    else {
        panic!()
    };
    assert_eq!(
        r["tiers"],
        serde_json::json!(["Supervisor", "Administrator", "Auditor"])
    );
    assert_eq!(r["ancestors"], serde_json::json!([]));
    assert_eq!(r["sod"], serde_json::json!([]));
    assert!(p.role_detail("Employee").is_none());
}

#[test]
fn check_report_on_valid_and_invalid_files() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml");
    let (report, ok) = check_report(&path);
    assert!(ok, "{report}");
    assert!(report.contains("valid policy"));
    let line = report
        .lines()
        .find(|l| l.starts_with("System Administrator"))
        .unwrap_or_default();
    assert!(line.contains("Agent, Reporting, Supervisor"), "{report}");
    assert!(report.contains("approve-own-admin"));
    assert!(report.contains("Standard Agent"));

    let dir = tempfile::tempdir().map_err(|e| e.to_string());
    let Ok(dir) = dir else { panic!("{dir:?}") };
    let bad = dir.path().join("bad.toml");
    let written = std::fs::write(&bad, "[[roles]]\nname = \"A\"\ninherits = [\"A\", \"B\"]\n");
    assert!(written.is_ok());
    let (report, ok) = check_report(&bad);
    assert!(!ok);
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].ends_with("invalid policy, 2 problems"), "{report}");
    assert!(
        lines.contains(&r#"role "A" inherits unknown role "B""#),
        "{report}"
    );
    assert!(lines.contains(&"inheritance cycle: A -> A"), "{report}");
}

#[test]
fn merge_imported_catalog_replaces_permissions_and_lists_missing_roles() {
    let p = default_policy();
    let imported = vec![
        ImportedRole {
            name: "Agent".into(),
            permissions: vec!["conversation:*:accept".into(), "bad perm".into()],
        },
        ImportedRole {
            name: "Reporting".into(),
            permissions: vec!["analytics:*:*".into()],
        },
        ImportedRole {
            name: "Not Managed".into(),
            permissions: vec!["x:y:z".into()],
        },
    ];
    let (merged, notes) = p.merge_imported_catalog(&imported);
    assert!(notes.contains(&r#"role "Supervisor" is in the policy but not in Genesys"#.to_owned()));
    assert!(
        notes.contains(&r#"role "Queue Member" is in the policy but not in Genesys"#.to_owned())
    );
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("\"Agent\" is in the policy"))
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(r#"Genesys role "Agent" has malformed permission "bad perm""#))
    );
    assert_eq!(notes.len(), 6, "{notes:#?}");
    assert_eq!(
        merged.role("Agent").map(|r| r.permissions.clone()),
        Some(vec!["conversation:*:accept".to_owned()])
    );
    assert!(!merged.is_managed("Not Managed"));
    // Inheritance, tiers and SoD are the local ones; permissions flow through inheritance.
    let sup = merged.effective_permissions(&set(&["Supervisor"]));
    assert!(sup.contains("conversation:*:accept") && sup.contains("analytics:*:*"));
    assert!(!sup.contains("conversation:call:accept") && !sup.contains("analytics:*:view"));
    assert!(
        sup.contains("routing:queue:view"),
        "Supervisor keeps its local permissions"
    );
    assert_eq!(merged.tiers().len(), 4);
    assert_eq!(merged.sod_rules().len(), 1);
    assert_eq!(merged.closure("Supervisor"), p.closure("Supervisor"));
    assert_ne!(merged.fingerprint(), p.fingerprint());
    let (again, _) = p.merge_imported_catalog(&imported);
    assert_eq!(again.fingerprint(), merged.fingerprint());
    // The original is untouched.
    assert!(
        p.effective_permissions(&set(&["Agent"]))
            .contains("conversation:call:accept")
    );
}

#[test]
fn imported_role_from_genesys_permission_policies() {
    let json = serde_json::json!([
        {"id": "p1", "domain": "routing", "entityName": "queue", "actionSet": ["view", "edit"], "allowConditions": false},
        {"domain": "analytics", "entityName": "*", "actionSet": ["view"]},
        {"domain": "routing", "entityName": "queue", "actionSet": ["view"]},
        {"domain": "directory", "entityName": "user"}
    ]);
    let policies: Result<Vec<PermissionPolicy>, _> = serde_json::from_value(json);
    let Ok(policies) = policies else {
        panic!("{policies:?}")
    };
    let role = ImportedRole::from_permission_policies("Supervisor", &policies);
    assert_eq!(role.name, "Supervisor");
    assert_eq!(
        role.permissions,
        [
            "routing:queue:view",
            "routing:queue:edit",
            "analytics:*:view"
        ]
    );
}

#[test]
fn policy_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Arc<Policy>>();
}

#[test]
fn merge_keeps_every_current_role_and_adds_the_desired_ones() {
    let p = default_policy();
    let current = set(&["Employee", "Supervisor", "Hand Granted"]);
    let desired = set(&["Agent", "Queue Member"]);
    assert_eq!(
        p.final_roles(Mode::Merge, &current, &desired),
        set(&[
            "Agent",
            "Employee",
            "Hand Granted",
            "Queue Member",
            "Supervisor"
        ])
    );
    assert_eq!(
        p.final_roles(Mode::Merge, &current, &RoleSet::new()),
        current
    );
}

#[test]
fn replace_drops_only_managed_unprotected_roles_the_job_does_not_want() {
    let p = default_policy();
    // `Supervisor` is managed and not wanted: removed. `Hand Granted` is outside the catalog
    // and `Employee` is protected: both kept.
    let current = set(&["Employee", "Supervisor", "Hand Granted"]);
    let desired = set(&["Agent", "Queue Member"]);
    assert_eq!(
        p.final_roles(Mode::Replace, &current, &desired),
        set(&["Agent", "Employee", "Hand Granted", "Queue Member"])
    );
}

#[test]
fn replace_keeps_a_protected_role_even_from_the_catalog() {
    let toml = DEFAULT.replace(
        r#"protected_roles = ["Employee"]"#,
        r#"protected_roles = ["Employee", "Reporting"]"#,
    );
    let p = match Policy::from_toml_str(&toml) {
        Ok(p) => p,
        Err(e) => panic!("policy must load: {e}"),
    };
    assert!(p.is_managed("Reporting"));
    let current = set(&["Employee", "Reporting", "Supervisor"]);
    assert_eq!(
        p.final_roles(Mode::Replace, &current, &set(&["Agent"])),
        set(&["Agent", "Employee", "Reporting"])
    );
}

#[test]
fn replace_with_nothing_desired_keeps_unmanaged_and_protected_roles() {
    let p = default_policy();
    let current = set(&["Employee", "Agent", "Reporting", "Hand Granted"]);
    assert_eq!(
        p.final_roles(Mode::Replace, &current, &RoleSet::new()),
        set(&["Employee", "Hand Granted"])
    );
}

#[test]
fn replace_of_a_user_without_roles_is_the_desired_set() {
    let p = default_policy();
    let desired = set(&["Agent", "Employee"]);
    assert_eq!(
        p.final_roles(Mode::Replace, &RoleSet::new(), &desired),
        desired
    );
}

#[test]
fn a_role_change_holds_exactly_the_differences() {
    let c = RoleChange::new(set(&["A", "B", "C"]), set(&["B", "C", "D", "E"]));
    assert_eq!(c.added, vec!["D".to_owned(), "E".to_owned()]);
    assert_eq!(c.removed, vec!["A".to_owned()]);
    assert!(!c.is_empty());
    assert!(RoleChange::new(set(&["A"]), set(&["A"])).is_empty());
}
