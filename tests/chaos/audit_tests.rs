//! The audit's own unit tests: each check can fail (and an honest run passes all of them).

use super::*;
use serde_json::json;

fn roles(r: &[&str]) -> Roles {
    r.iter().map(|s| (*s).to_owned()).collect()
}

fn job(id: &str) -> Job {
    Job {
        id: id.into(),
        kind: "sync".into(),
        status: "succeeded".into(),
        dry_run: false,
        created_ms: 1_000,
        finished_ms: Some(5_000),
        counts: [("total", 1), ("applied", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        write_api: Some("scim".into()),
    }
}

fn write(seq: u64, client: &str, corr: Option<&str>, before: &[&str], after: &[&str]) -> Write {
    Write {
        seq,
        at_ms: 2_000 + seq as i64,
        client_id: client.into(),
        via: "scim_patch".into(),
        user_id: "u1".into(),
        external_id: "EMP-000001".into(),
        roles_before: roles(before),
        roles_after: roles(after),
        correlation_id: corr.map(str::to_owned),
    }
}

/// One job that gave Agent to EMP-000001, told the truth about it.
fn honest() -> Collected {
    Collected {
        rolesync_client: "rolesync-dev".into(),
        jobs: vec![job("J")],
        items: BTreeMap::from([(
            "J".to_owned(),
            vec![Item {
                line: 2,
                external_id: "EMP-000001".into(),
                outcome: "applied".into(),
                reason: None,
                roles_added: roles(&["Agent"]),
                roles_removed: roles(&[]),
                roles_after: Some(roles(&["Agent", "Employee"])),
            }],
        )]),
        writes: vec![write(
            1,
            "rolesync-dev",
            Some("J:0:1"),
            &["Employee"],
            &["Agent", "Employee"],
        )],
        final_roles: BTreeMap::from([("EMP-000001".to_owned(), roles(&["Agent", "Employee"]))]),
        events: vec![
            (
                "role_sync.completed".into(),
                json!({"job_id": "J", "external_id": "EMP-000001"}),
            ),
            ("job.finished".into(), json!({"job_id": "J"})),
        ],
        api_violations: vec![],
    }
}

fn lie(c: &mut Collected) {
    let it = &mut c.items.get_mut("J").expect("J")[0];
    it.outcome = "unchanged".into();
    it.roles_added.clear();
    it.roles_after = None;
    c.jobs[0].counts = [("total", 1), ("unchanged", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
}

#[test]
fn an_honest_run_has_no_finding() {
    assert_eq!(audit(&honest()).findings, Vec::<String>::new());
}

#[test]
fn a_write_recorded_unchanged_is_the_lie() {
    let mut c = honest();
    lie(&mut c);
    let f = check_writes_recorded(&c, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("EMP-000001") && f[0].contains("job J"),
        "{f:?}"
    );
    assert!(
        f[0].contains("recorded as unchanged but the target accepted a write"),
        "{f:?}"
    );
    assert!(f[0].contains("seq 1 via scim_patch"), "{f:?}");
}

#[test]
fn the_lie_is_found_without_correlation_ids_too() {
    let mut c = honest();
    lie(&mut c);
    c.writes[0].correlation_id = None;
    let f = check_writes_recorded(&c, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("job J: unchanged"), "{f:?}");
    // Another job's record of the same change, but at another time, does not cover it.
    let mut other = job("K");
    other.created_ms = 100_000;
    other.finished_ms = Some(101_000);
    c.jobs.push(other);
    let mut it = honest().items["J"][0].clone();
    it.line = 1;
    c.items.insert("K".into(), vec![it]);
    assert_eq!(check_writes_recorded(&c, &mut Report::default()).len(), 1);
}

#[test]
fn an_applied_record_that_leaves_out_an_earlier_attempts_write_is_found() {
    // Attempt 1 granted Agent; the new owner read after it and recorded only Reporting.
    let mut c = honest();
    c.writes.push(write(
        2,
        "rolesync-dev",
        Some("J:0:2"),
        &["Agent", "Employee"],
        &["Agent", "Employee", "Reporting"],
    ));
    let it = &mut c.items.get_mut("J").expect("J")[0];
    it.roles_added = roles(&["Reporting"]);
    let f = check_writes_recorded(&c, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("recorded as applied (added {\"Reporting\"}, removed {})"),
        "{f:?}"
    );
    assert!(f[0].contains("seq 1 via scim_patch"), "{f:?}");
}

#[test]
fn a_rejected_user_the_job_wrote_is_found() {
    let mut c = honest();
    let it = &mut c.items.get_mut("J").expect("J")[0];
    it.outcome = "rejected".into();
    it.reason = Some("sod_conflict".into());
    let f = check_writes_recorded(&c, &mut Report::default());
    assert!(f[0].contains("recorded as rejected/sod_conflict"), "{f:?}");
}

#[test]
fn an_applied_record_without_a_write_is_found() {
    let mut c = honest();
    c.writes.clear();
    let f = check_applied_records(&c, &mut Report::default());
    assert!(f[0].contains("accepted no write of that job"), "{f:?}");
    // A write of the job that does not add what the record says it added.
    c.writes.push(write(
        1,
        "rolesync-dev",
        Some("J:0:1"),
        &["Employee", "Agent"],
        &["Agent"],
    ));
    let f = check_applied_records(&c, &mut Report::default());
    assert!(f[0].contains("recorded \"Agent\" as added"), "{f:?}");
}

#[test]
fn a_bulk_race_is_excused_by_the_other_writer_only() {
    let mut c = honest();
    // The hand writer gave Agent between rolesync's read and its bulk grant of Agent (which
    // then changed nothing: no log entry); the grant of Reporting did change the user.
    c.writes = vec![
        write(
            1,
            "hand-writer",
            None,
            &["Employee"],
            &["Agent", "Employee"],
        ),
        write(
            2,
            "rolesync-dev",
            Some("J:0:1"),
            &["Agent", "Employee"],
            &["Agent", "Employee", "Reporting"],
        ),
    ];
    c.items.get_mut("J").expect("J")[0].roles_added = roles(&["Agent", "Reporting"]);
    // Through SCIM (If-Match) the race cannot happen: no excuse.
    assert_eq!(check_applied_records(&c, &mut Report::default()).len(), 1);
    c.jobs[0].write_api = Some("authorization".into());
    let mut r = Report::default();
    assert_eq!(check_applied_records(&c, &mut r), Vec::<String>::new());
    assert_eq!(r.excused.get("bulk race"), Some(&1));
    // Even when the other writer made the job's whole change (no write of J at all).
    let mut only_other = c.clone();
    only_other.writes.remove(1);
    only_other.items.get_mut("J").expect("J")[0].roles_added = roles(&["Agent"]);
    assert_eq!(
        check_applied_records(&only_other, &mut Report::default()),
        Vec::<String>::new()
    );
    // Without the other writer, nobody added Agent: the record is wrong.
    c.writes.remove(0);
    let f = check_applied_records(&c, &mut Report::default());
    assert!(f[0].contains("recorded \"Agent\" as added"), "{f:?}");
}

#[test]
fn counts_that_do_not_add_up_are_found() {
    let mut c = honest();
    c.jobs[0].counts.insert("failed".into(), 1);
    let f = check_jobs(&c);
    assert!(f.iter().any(|f| f.contains("sum to 2")), "{f:?}");
    c.jobs[0].status = "running".into();
    assert!(check_jobs(&c).iter().any(|f| f.contains("has not ended")));
}

#[test]
fn a_final_state_other_than_the_record_is_found() {
    let mut c = honest();
    c.final_roles
        .insert("EMP-000001".into(), roles(&["Employee"]));
    let f = check_final_state(&c, &mut Report::default());
    assert!(f[0].contains("EMP-000001, job J: holds"), "{f:?}");
}

#[test]
fn a_final_state_after_another_job_wrote_is_not_judged() {
    let mut c = honest();
    c.final_roles.insert(
        "EMP-000001".into(),
        roles(&["Employee", "Agent", "Reporting"]),
    );
    // Another job's bulk grant of Reporting landed during J.
    let mut other = write(
        0,
        "rolesync-dev",
        Some("K:0:1"),
        &["Employee"],
        &["Employee", "Reporting"],
    );
    other.via = "bulk_grant".into();
    c.writes.insert(0, other);
    let mut r = Report::default();
    assert_eq!(check_final_state(&c, &mut r), Vec::<String>::new());
    assert_eq!(
        r.excused.get("final state: another writer during the job"),
        Some(&1)
    );
    // Alone, J's write cannot explain Reporting.
    c.writes.remove(0);
    assert_eq!(check_final_state(&c, &mut Report::default()).len(), 1);
}

#[test]
fn missing_webhooks_are_found() {
    let mut c = honest();
    c.events.clear();
    let f = check_webhooks(&c);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].contains("no role_sync.completed"), "{f:?}");
    assert!(f[1].contains("no job.finished"), "{f:?}");
}

#[test]
fn a_500_is_a_finding() {
    let mut c = honest();
    c.api_violations.push("GET /v1/jobs answered 500".into());
    assert_eq!(audit(&c).findings.len(), 1);
}

#[test]
fn an_intent_without_its_write_is_excused_only_when_another_writer_made_the_change() {
    let mut c = honest();
    // J (SCIM) wrote nothing to the user: its process died between the intent and the write,
    // and the hand writer gave Agent before the re-run, which found it in place.
    c.writes = vec![write(
        1,
        "hand-writer",
        None,
        &["Employee"],
        &["Agent", "Employee"],
    )];
    c.items.get_mut("J").expect("J")[0].roles_added = roles(&["Agent"]);
    let mut r = Report::default();
    assert_eq!(check_applied_records(&c, &mut r), Vec::<String>::new());
    assert_eq!(
        r.excused
            .get("intent without its write, same change by another writer"),
        Some(&1)
    );
    // Nobody made the change: a record without a write is a finding.
    c.writes.clear();
    let f = check_applied_records(&c, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
}

/// The hour-long run of 2026-12-07 (seed 7383417804765711351): a cancelled job's first run
/// granted Agent and Queue Member and lost its commit; the hand writer then took Queue Member
/// away; the settle's read-back found Agent only and recorded that. Excused only because the
/// other writer undid it, after the write and before the job ended.
#[test]
fn a_write_undone_by_another_writer_before_the_read_back_is_excused_only_then() {
    let mut c = honest();
    c.writes = vec![
        write(
            1,
            "rolesync-dev",
            Some("J:0:1"),
            &["Employee"],
            &["Agent", "Employee"],
        ),
        write(
            2,
            "rolesync-dev",
            Some("J:0:1"),
            &["Agent", "Employee"],
            &["Agent", "Employee", "Queue Member"],
        ),
        write(
            3,
            "hand-writer",
            None,
            &["Agent", "Employee", "Queue Member"],
            &["Agent", "Employee"],
        ),
    ];
    let mut r = Report::default();
    assert_eq!(check_writes_recorded(&c, &mut r), Vec::<String>::new());
    assert_eq!(
        r.excused
            .get("write undone by another writer before the read-back"),
        Some(&1)
    );
    // Nobody undid it: the record leaves out a write that landed.
    let mut kept = c.clone();
    kept.writes.pop();
    let f = check_writes_recorded(&kept, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("recorded as applied"), "{f:?}");
    // Undone before the write (not after it): no excuse.
    let mut before = c.clone();
    before.writes[2].seq = 0;
    assert_eq!(
        check_writes_recorded(&before, &mut Report::default()).len(),
        1
    );
    // A record that is not what a read-back gives (`unchanged`): no excuse (both writes).
    c.items.get_mut("J").expect("J")[0].outcome = "unchanged".into();
    assert_eq!(check_writes_recorded(&c, &mut Report::default()).len(), 2);
}

/// The same run: a SCIM-path job's record credits it with Reporting, which another job granted
/// before the job's own (later) write, which added the rest. The job's earlier run had recorded
/// the intent and its write did not land. Excused per role: only for a role already in place
/// before each of the job's writes and added by another writer during the job.
#[test]
fn a_role_another_writer_put_in_place_before_the_jobs_writes_is_excused_per_role() {
    let mut c = honest();
    c.writes = vec![
        write(
            1,
            "rolesync-dev",
            Some("K:1:3"),
            &["Employee"],
            &["Employee", "Reporting"],
        ),
        write(
            2,
            "rolesync-dev",
            Some("J:0:3"),
            &["Employee", "Reporting"],
            &["Agent", "Employee", "Reporting"],
        ),
    ];
    c.items.get_mut("J").expect("J")[0].roles_added = roles(&["Agent", "Reporting"]);
    let mut r = Report::default();
    assert_eq!(check_applied_records(&c, &mut r), Vec::<String>::new());
    assert_eq!(
        r.excused
            .get("intent without its write, same change by another writer"),
        Some(&1)
    );
    // The other writer's grant came after the job's write: the job's write would have had to
    // add Reporting, and it did not.
    let mut after = c.clone();
    after.writes[0].seq = 3;
    after.writes[0].roles_before = roles(&["Agent", "Employee"]);
    after.writes[0].roles_after = roles(&["Agent", "Employee", "Reporting"]);
    after.writes[1].roles_before = roles(&["Employee"]);
    after.writes[1].roles_after = roles(&["Agent", "Employee"]);
    let f = check_applied_records(&after, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("recorded \"Reporting\" as added"), "{f:?}");
    // Written by the chunk's first run: no earlier run's intent could credit the job with it.
    let mut first_run = c.clone();
    first_run.writes[1].correlation_id = Some("J:0:1".into());
    assert_eq!(
        check_applied_records(&first_run, &mut Report::default()).len(),
        1
    );
    // Nobody else granted it: a finding.
    c.writes.remove(0);
    c.writes[0].roles_before = roles(&["Employee", "Reporting"]);
    let f = check_applied_records(&c, &mut Report::default());
    assert_eq!(f.len(), 1, "{f:?}");
}
