//! The end audit: pure functions over what the run collected (jobs and their items from the
//! API, the emulator's write log and final users, the webhook events, the API answers). Each
//! finding names the user (externalId) and the job, and for a write its seq and path (`via`).
//!
//! The invariants checked (docs/chaos.md, "What the audit checks"):
//! 1. Every job ended, and its counts add up: the outcome counts sum to its rows, and equal
//!    what its items listing shows.
//! 2. Every write the target accepted from rolesync's client is recorded as `applied`: by the
//!    job its correlation id names (`{job_id}:{chunk}:{fence}`), or, when the write carries no
//!    correlation id, by some real job running at the time, with `roles_added` ⊇ the write's
//!    added roles and `roles_removed` ⊇ its removed ones. A write with no such record is the
//!    lie this test exists for.
//! 3. Every `applied` record matches accepted writes: at least one write of that job to that
//!    user, and the record's added/removed ⊆ the union of those writes' added/removed; all
//!    `applied` rows of a user in a job are one record.
//!    Exception (bulk race): the Authorization API's bulk calls carry no `If-Match`
//!    (docs/bulk-grants.md, Concurrency). If another writer gave (or took) a role between
//!    rolesync's read and its bulk call, the call changes nothing for that role, so no write
//!    shows it, yet the record rightly says the job wanted it. In a job written through the
//!    Authorization API, a role missing from the job's writes (all of them, when the other
//!    writer made the whole change) is excused when another client's (or job's) write to that
//!    user in the job's time window made the same change. Never for the SCIM path.
//! 4. Final state: a user whose last write in the log is rolesync's holds exactly the
//!    `roles_after` of the record that write belongs to. Skipped (counted) when another
//!    writer (the hand writer, or another job) touched the user after that job started: bulk
//!    calls carry no `If-Match`, so the user may rightly hold a change the record does not
//!    show (the bulk race above, between any two writers).
//! 5. Webhooks: a `role_sync.completed` per applied (job, user), a `job.finished` per job.
//! 6. The API never answered a 5xx other than 503 with `Retry-After`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Clock slack when a write without correlation id is matched to the jobs running at its time
/// (writes and jobs are stamped by clocks of one machine, in different processes).
pub const SLACK_MS: i64 = 2_000;

pub type Roles = BTreeSet<String>;

#[derive(Clone, Debug)]
pub struct Write {
    pub seq: u64,
    pub at_ms: i64,
    pub client_id: String,
    pub via: String,
    pub user_id: String,
    pub external_id: String,
    pub roles_before: Roles,
    pub roles_after: Roles,
    pub correlation_id: Option<String>,
}

impl Write {
    pub fn added(&self) -> Roles {
        self.roles_after
            .difference(&self.roles_before)
            .cloned()
            .collect()
    }
    pub fn removed(&self) -> Roles {
        self.roles_before
            .difference(&self.roles_after)
            .cloned()
            .collect()
    }
    /// The job a correlation id `{job_id}:{chunk_no}:{fence}` names.
    pub fn job_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()?.split(':').next()
    }
    fn describe(&self) -> String {
        format!(
            "write seq {} via {} to user id {} at {} ms (added {:?}, removed {:?}, correlation {:?})",
            self.seq,
            self.via,
            self.user_id,
            self.at_ms,
            self.added(),
            self.removed(),
            self.correlation_id
        )
    }
}

#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub dry_run: bool,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// `total` and one entry per outcome.
    pub counts: BTreeMap<String, i64>,
    pub write_api: Option<String>,
}

impl Job {
    fn window_contains(&self, at_ms: i64) -> bool {
        at_ms >= self.created_ms - SLACK_MS
            && self.finished_ms.is_none_or(|f| at_ms <= f + SLACK_MS)
    }
}

#[derive(Clone, Debug)]
pub struct Item {
    pub line: i64,
    pub external_id: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub roles_added: Roles,
    pub roles_removed: Roles,
    pub roles_after: Option<Roles>,
}

#[derive(Clone, Debug, Default)]
pub struct Collected {
    pub rolesync_client: String,
    pub jobs: Vec<Job>,
    /// By job id, every row.
    pub items: BTreeMap<String, Vec<Item>>,
    /// The emulator's write log, in seq order.
    pub writes: Vec<Write>,
    /// externalId → roles now.
    pub final_roles: BTreeMap<String, Roles>,
    /// Distinct events: (type, data).
    pub events: Vec<(String, Value)>,
    pub api_violations: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<String>,
    /// Exceptions taken (named in docs/chaos.md), counted by name.
    pub excused: BTreeMap<&'static str, u64>,
}

const FINAL: &[&str] = &["succeeded", "completed_with_errors", "failed", "cancelled"];
const OUTCOMES: &[&str] = &[
    "pending",
    "rejected",
    "applied",
    "unchanged",
    "not_found",
    "failed",
    "cancelled",
    "planned",
];

struct Index<'a> {
    jobs: BTreeMap<&'a str, &'a Job>,
    /// (job, externalId) → that user's rows in the job.
    rows: BTreeMap<(&'a str, &'a str), Vec<&'a Item>>,
    /// externalId → (job, its applied record), real jobs only.
    applied: BTreeMap<&'a str, Vec<(&'a Job, &'a Item)>>,
}

fn index(c: &Collected) -> Index<'_> {
    let jobs: BTreeMap<&str, &Job> = c.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut rows: BTreeMap<(&str, &str), Vec<&Item>> = BTreeMap::new();
    for (job, items) in &c.items {
        for it in items {
            rows.entry((job.as_str(), it.external_id.as_str()))
                .or_default()
                .push(it);
        }
    }
    let mut applied: BTreeMap<&str, Vec<(&Job, &Item)>> = BTreeMap::new();
    for ((job, ext), items) in &rows {
        let Some(j) = jobs.get(job) else { continue };
        if j.dry_run {
            continue;
        }
        if let Some(it) = items.iter().find(|i| i.outcome == "applied") {
            applied.entry(ext).or_default().push((j, it));
        }
    }
    Index {
        jobs,
        rows,
        applied,
    }
}

fn outcomes_of(ix: &Index<'_>, job: &str, ext: &str) -> String {
    match ix.rows.get(&(job, ext)) {
        None => "no row of that user".to_owned(),
        Some(items) => {
            let set: BTreeSet<String> = items
                .iter()
                .map(|i| match &i.reason {
                    Some(r) => format!("{}/{r}", i.outcome),
                    None if i.outcome == "applied" => format!(
                        "applied (added {:?}, removed {:?})",
                        i.roles_added, i.roles_removed
                    ),
                    None => i.outcome.clone(),
                })
                .collect();
            set.into_iter().collect::<Vec<_>>().join(", ")
        }
    }
}

fn covers(it: &Item, w: &Write) -> bool {
    w.added().is_subset(&it.roles_added) && w.removed().is_subset(&it.roles_removed)
}

/// 1. Jobs ended, counts add up and match the items.
pub fn check_jobs(c: &Collected) -> Vec<String> {
    let mut out = Vec::new();
    for j in &c.jobs {
        if !FINAL.contains(&j.status.as_str()) || j.finished_ms.is_none() {
            out.push(format!(
                "job {} ({}) has not ended: status {}, finished_at {:?}",
                j.id, j.kind, j.status, j.finished_ms
            ));
        }
        let total = j.counts.get("total").copied().unwrap_or(-1);
        let sum: i64 = OUTCOMES
            .iter()
            .map(|o| j.counts.get(*o).copied().unwrap_or(0))
            .sum();
        if sum != total {
            out.push(format!(
                "job {}: its outcome counts sum to {sum}, not its {total} rows: {:?}",
                j.id, j.counts
            ));
        }
        let items = c.items.get(&j.id).map(Vec::as_slice).unwrap_or(&[]);
        if items.len() as i64 != total {
            out.push(format!(
                "job {}: {} rows listed, {total} counted",
                j.id,
                items.len()
            ));
        }
        for o in OUTCOMES {
            let listed = items.iter().filter(|i| i.outcome == *o).count() as i64;
            let counted = j.counts.get(*o).copied().unwrap_or(0);
            if listed != counted {
                out.push(format!(
                    "job {}: {counted} rows counted {o}, {listed} listed",
                    j.id
                ));
            }
        }
    }
    out
}

/// 2. Every write of rolesync's client is recorded as `applied`.
pub fn check_writes_recorded(c: &Collected, report: &mut Report) -> Vec<String> {
    let ix = index(c);
    let mut out = Vec::new();
    for w in c.writes.iter().filter(|w| w.client_id == c.rolesync_client) {
        let ext = w.external_id.as_str();
        let records = ix.applied.get(ext).map(Vec::as_slice).unwrap_or(&[]);
        match w.job_id() {
            Some(job) => {
                if !ix.jobs.contains_key(job) {
                    out.push(format!(
                        "user {ext}: {} names job {job}, which the API does not list",
                        w.describe()
                    ));
                    continue;
                }
                let ok = records.iter().any(|(j, it)| j.id == job && covers(it, w));
                if !ok && undone_before_read_back(c, &ix, job, w) {
                    *report
                        .excused
                        .entry("write undone by another writer before the read-back")
                        .or_default() += 1;
                    continue;
                }
                if !ok {
                    out.push(format!(
                        "user {ext}, job {job}: recorded as {} but the target accepted a write: {}",
                        outcomes_of(&ix, job, ext),
                        w.describe()
                    ));
                }
            }
            None => {
                let ok = records
                    .iter()
                    .any(|(j, it)| j.window_contains(w.at_ms) && covers(it, w));
                if !ok {
                    let running: Vec<String> = c
                        .jobs
                        .iter()
                        .filter(|j| !j.dry_run && j.window_contains(w.at_ms))
                        .filter(|j| ix.rows.contains_key(&(j.id.as_str(), ext)))
                        .map(|j| format!("job {}: {}", j.id, outcomes_of(&ix, &j.id, ext)))
                        .collect();
                    let recorded = if running.is_empty() {
                        "nothing (no running job has a row of that user)".to_owned()
                    } else {
                        running.join("; ")
                    };
                    out.push(format!(
                        "user {ext}: recorded as {recorded} but the target accepted a write with no `applied` record covering it: {}",
                        w.describe()
                    ));
                }
            }
        }
    }
    out
}

/// Exception to check 2 (docs/chaos.md): a write of job `job` that its record leaves out, in
/// part or whole, because another writer undid that part before the job read the user back.
/// A job that lost a chunk's commit (or was cancelled) learns what its earlier run wrote only
/// by reading the user (`sync/settle.rs`, `decide::settled`): a role it granted that someone
/// removed before that read (or one it removed that someone gave back) is not in place, and
/// the target keeps no history rolesync could read. Excused only when the job's record of the
/// user is `applied` or `cancelled` (what a read-back gives), and, for every role of the write
/// the record leaves out, a later write by another client or job during the job undid it.
fn undone_before_read_back(c: &Collected, ix: &Index<'_>, job: &str, w: &Write) -> bool {
    let Some(j) = ix.jobs.get(job) else {
        return false;
    };
    let Some(items) = ix.rows.get(&(job, w.external_id.as_str())) else {
        return false;
    };
    if !items
        .iter()
        .all(|i| i.outcome == "applied" || i.outcome == "cancelled" || i.outcome == "rejected")
    {
        return false;
    }
    let record = items.iter().find(|i| i.outcome == "applied");
    let recorded = |what: &str| -> Roles {
        record.map_or_else(Roles::new, |i| {
            if what == "added" {
                i.roles_added.clone()
            } else {
                i.roles_removed.clone()
            }
        })
    };
    let later: Vec<&Write> = c
        .writes
        .iter()
        .filter(|o| o.external_id == w.external_id && o.seq > w.seq && j.window_contains(o.at_ms))
        .filter(|o| o.client_id != c.rolesync_client || o.job_id() != Some(job))
        .collect();
    let mut left_out = 0;
    for (what, done) in [("added", w.added()), ("removed", w.removed())] {
        for role in done.difference(&recorded(what)) {
            left_out += 1;
            let undone = later.iter().any(|o| {
                if what == "added" {
                    o.removed().contains(role)
                } else {
                    o.added().contains(role)
                }
            });
            if !undone {
                return false;
            }
        }
    }
    left_out > 0
}

/// 3. Every `applied` record matches accepted writes.
pub fn check_applied_records(c: &Collected, report: &mut Report) -> Vec<String> {
    let ix = index(c);
    let mut out = Vec::new();
    let correlated = c
        .writes
        .iter()
        .any(|w| w.client_id == c.rolesync_client && w.correlation_id.is_some());
    for ((job, ext), items) in &ix.rows {
        let applied: Vec<&&Item> = items.iter().filter(|i| i.outcome == "applied").collect();
        let Some(first) = applied.first() else {
            continue;
        };
        let Some(j) = ix.jobs.get(job) else { continue };
        if applied.iter().any(|i| {
            i.roles_added != first.roles_added
                || i.roles_removed != first.roles_removed
                || i.roles_after != first.roles_after
        }) {
            out.push(format!(
                "user {ext}, job {job}: applied more than once, with different roles: {:?}",
                applied
                    .iter()
                    .map(|i| (i.line, &i.roles_added, &i.roles_removed))
                    .collect::<Vec<_>>()
            ));
        }
        let mixed: BTreeSet<&str> = items
            .iter()
            .filter(|i| i.outcome != "rejected")
            .map(|i| i.outcome.as_str())
            .collect();
        if mixed.len() > 1 {
            out.push(format!(
                "user {ext}, job {job}: its rows have different outcomes {mixed:?}"
            ));
        }
        if j.dry_run {
            out.push(format!("user {ext}, job {job}: a dry run recorded applied"));
            continue;
        }
        let mine: Vec<&Write> = c
            .writes
            .iter()
            .filter(|w| w.client_id == c.rolesync_client && w.external_id == **ext)
            .filter(|w| match w.job_id() {
                Some(wj) => wj == *job,
                None => !correlated && j.window_contains(w.at_ms),
            })
            .collect();
        let added: Roles = mine.iter().flat_map(|w| w.added()).collect();
        let removed: Roles = mine.iter().flat_map(|w| w.removed()).collect();
        let others: Vec<&Write> = c
            .writes
            .iter()
            .filter(|w| w.external_id == **ext && j.window_contains(w.at_ms))
            .filter(|w| !mine.iter().any(|m| m.seq == w.seq))
            .collect();
        // Only the bulk path writes without If-Match: only there may another writer's change
        // make rolesync's call a no-op (the SCIM path would have had a 409 and re-read).
        let bulk = j.write_api.as_deref() == Some("authorization");
        // On the SCIM path too, one case: the job's writes to the user did not make a change
        // its record claims (none at all, or none for that role: it was already in place before
        // each of them), and another writer made it during the job. A run that recorded its
        // intent and whose write did not land (killed before sending, or cut off at its lease's
        // end) leaves an intent that looks like a write made; the re-run finds the change in
        // place (made by the other writer) and reports it as the job's (`decide::with_prior`).
        // rolesync cannot tell the two apart: the target keeps no history it could read.
        // Only a re-run (a write under a fence above 1) can have found an earlier run's intent.
        let after_an_earlier_run = mine.iter().all(|w| {
            w.correlation_id
                .as_deref()
                .and_then(|c| c.rsplit(':').next())
                .and_then(|f| f.parse::<u64>().ok())
                .is_some_and(|fence| fence > 1)
        });
        let in_place_before_mine = |what: &str, role: &String| {
            after_an_earlier_run
                && mine
                    .iter()
                    .all(|w| (what == "added") == w.roles_before.contains(role))
        };
        let mut unexplained = Vec::new();
        let mut excused = 0;
        let mut excused_crash = 0;
        for (what, recorded, written) in [
            ("added", &first.roles_added, &added),
            ("removed", &first.roles_removed, &removed),
        ] {
            for role in recorded.difference(written) {
                let by_other = others.iter().any(|w| {
                    let d = if what == "added" {
                        w.added()
                    } else {
                        w.removed()
                    };
                    d.contains(role)
                });
                if bulk && by_other {
                    excused += 1;
                } else if !bulk && by_other && in_place_before_mine(what, role) {
                    excused_crash += 1;
                } else {
                    unexplained.push((what, role));
                }
            }
        }
        if excused > 0 {
            *report.excused.entry("bulk race").or_default() += excused;
        }
        if excused_crash > 0 {
            *report
                .excused
                .entry("intent without its write, same change by another writer")
                .or_default() += excused_crash;
        }
        if unexplained.is_empty() {
            continue;
        }
        if mine.is_empty() {
            out.push(format!(
                "user {ext}, job {job}: recorded applied (added {:?}, removed {:?}) but the target accepted no write of that job to that user",
                first.roles_added, first.roles_removed
            ));
            continue;
        }
        for (what, role) in unexplained {
            out.push(format!(
                "user {ext}, job {job}: recorded {role:?} as {what} but no accepted write of that job {what} it (writes seq {:?})",
                mine.iter().map(|w| (w.seq, w.via.as_str())).collect::<Vec<_>>()
            ));
        }
    }
    out
}

/// 4. Users last written by rolesync hold what the record says.
pub fn check_final_state(c: &Collected, report: &mut Report) -> Vec<String> {
    let ix = index(c);
    let mut out = Vec::new();
    let mut last: BTreeMap<&str, &Write> = BTreeMap::new();
    for w in &c.writes {
        last.insert(w.external_id.as_str(), w);
    }
    let with_employee = |r: &Roles| {
        let mut r = r.clone();
        r.insert("Employee".to_owned());
        r
    };
    for (ext, w) in last {
        if w.client_id != c.rolesync_client {
            continue;
        }
        let Some(now) = c.final_roles.get(ext) else {
            out.push(format!("user {ext}: written ({}) but gone", w.describe()));
            continue;
        };
        let now = with_employee(now);
        let candidates: Vec<&(&Job, &Item)> = ix
            .applied
            .get(ext)
            .map(|v| v.iter())
            .into_iter()
            .flatten()
            .filter(|(j, _)| match w.job_id() {
                Some(job) => j.id == job,
                None => j.window_contains(w.at_ms),
            })
            .collect();
        if candidates.is_empty() {
            // No record at all: check 2 reports this write.
            continue;
        }
        // A candidate is clean when every write to the user since its job started is the
        // job's own (by correlation id; without one, a rolesync write the record covers).
        let clean: Vec<&&(&Job, &Item)> = candidates
            .iter()
            .filter(|(j, it)| {
                c.writes
                    .iter()
                    .filter(|o| o.external_id == ext && o.at_ms >= j.created_ms - SLACK_MS)
                    .all(|o| {
                        o.client_id == c.rolesync_client
                            && match o.job_id() {
                                Some(x) => x == j.id,
                                None => covers(it, o),
                            }
                    })
            })
            .collect();
        if clean.is_empty() {
            *report
                .excused
                .entry("final state: another writer during the job")
                .or_default() += 1;
            continue;
        }
        let candidates = clean;
        let ok = candidates
            .iter()
            .any(|(_, it)| it.roles_after.as_ref().map(with_employee).as_ref() == Some(&now));
        if !ok {
            let (j, it) = candidates[0];
            out.push(format!(
                "user {ext}, job {}: holds {now:?} but the record says roles_after {:?} (last write {})",
                j.id,
                it.roles_after,
                w.describe()
            ));
        }
    }
    out
}

/// 5. A `role_sync.completed` per applied (job, user), a `job.finished` per job.
pub fn check_webhooks(c: &Collected) -> Vec<String> {
    let ix = index(c);
    let mut completed = BTreeSet::new();
    let mut finished = BTreeSet::new();
    for (t, d) in &c.events {
        let job = d["job_id"].as_str().unwrap_or("").to_owned();
        match t.as_str() {
            "role_sync.completed" => {
                completed.insert((job, d["external_id"].as_str().unwrap_or("").to_owned()));
            }
            "job.finished" => {
                finished.insert(job);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (ext, records) in &ix.applied {
        for (j, _) in records {
            if !completed.contains(&(j.id.clone(), (*ext).to_owned())) {
                out.push(format!(
                    "user {ext}, job {}: applied but no role_sync.completed webhook arrived",
                    j.id
                ));
            }
        }
    }
    for j in &c.jobs {
        if FINAL.contains(&j.status.as_str()) && !finished.contains(&j.id) {
            out.push(format!(
                "job {} ({}, {}): no job.finished webhook arrived",
                j.id, j.kind, j.status
            ));
        }
    }
    out
}

/// Every check, in order.
pub fn audit(c: &Collected) -> Report {
    let mut report = Report::default();
    let mut f = check_jobs(c);
    f.extend(check_writes_recorded(c, &mut report));
    f.extend(check_applied_records(c, &mut report));
    f.extend(check_final_state(c, &mut report));
    f.extend(check_webhooks(c));
    f.extend(
        c.api_violations
            .iter()
            .map(|v| format!("the API answered a 5xx other than 503 with Retry-After: {v}")),
    );
    report.findings = f;
    report
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
