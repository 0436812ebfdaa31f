//! Stage 1: each row against the policy, without calling the target, and the valid rows grouped
//! per user. Shared with `POST /v1/validate` and `rolesync
//! validate`, so a batch is judged the same way everywhere.

use super::Deps;
use super::intake::PlanJob;
use super::record_depth;
use super::users::{UserRows, runs_by_user};
use crate::audit::events::RoleSyncRejected;
use crate::domain::EventType;
use crate::domain::{Action, Assignment, ExternalId, JobKind, ReasonCode};
use crate::policy::{Policy, RoleSet};
use crate::store::{GeneratedRow, JobRecord, Overflow, RowResult, Store, StoreError};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Where a page stands in its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// More pages of this job follow.
    More,
    /// The job's last page.
    Last,
    /// The job's rows could not be read: drop what was planned so far; the planning lease
    /// expires and the job is planned again.
    Abandon,
}

/// One page of a job's users, validated. A user's rows are always in one page.
pub(crate) struct Validated {
    pub(crate) job: JobRecord,
    pub(crate) policy: Arc<Policy>,
    pub(crate) page: Page,
    /// The first page of the job.
    pub(crate) first: bool,
    pub(crate) rejected: Vec<RowResult>,
    /// The rejected rows by line, for their audit events.
    pub(crate) rejected_rows: HashMap<i64, Assignment>,
    /// The users with at least one valid row, each with only its valid rows.
    pub(crate) users: Vec<PlanUser>,
    /// The job's `plan` span (`PlanJob::span`).
    pub(crate) span: tracing::Span,
}

/// Pending rows read and judged at a time: a job of any size is planned in bounded memory.
const PAGE_ROWS: usize = 5000;

/// What planning needs of one user: the lines to chunk together, the roles the job may grant
/// them (privileged grants wait for approval) and, when the rows alone tell (a revert), whether
/// the job takes roles away from them (the removal bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlanUser {
    pub(crate) external_id: String,
    pub(crate) lines: Vec<i64>,
    pub(crate) grants: RoleSet,
    pub(crate) removes: Option<bool>,
    /// A leaver (`revoke`): loses every managed role, whatever the job's mode.
    pub(crate) revokes: bool,
}

impl PlanUser {
    /// A user of a submitted batch: grants the expanded desired set.
    fn of_batch(u: &UserRows<Assignment>, policy: &Policy) -> PlanUser {
        PlanUser {
            external_id: u.external_id.clone(),
            lines: u.lines().collect(),
            grants: u.desired(policy),
            removes: None,
            revokes: u.revokes(),
        }
    }

    /// The user of a generated row. A reconcile grants the desired state; a revert grants
    /// back what the reverted job removed and takes away what it added (its force applies the
    /// same delta), so both are known without reading the user.
    fn of_generated(kind: JobKind, r: GeneratedRow, policy: &Policy) -> PlanUser {
        let desired: RoleSet = r.desired_roles.into_iter().collect();
        let (grants, removes) = match kind {
            JobKind::Revert => {
                let expected: RoleSet = r.expected_roles.into_iter().collect();
                let grants = desired.difference(&expected).cloned().collect();
                (grants, Some(expected.difference(&desired).next().is_some()))
            }
            JobKind::Sync | JobKind::Reconcile => (policy.expand(&desired), None),
        };
        PlanUser {
            external_id: r.external_id,
            lines: vec![r.line],
            grants,
            removes,
            revokes: false,
        }
    }
}

/// One page of a job's users: a submitted batch's judged against the policy (rejected rows
/// and users), a generated job's as they are (the store made them from what it recorded).
async fn next_page(
    deps: &Deps,
    job: &JobRecord,
    policy: &Policy,
    missing_from_org: Option<&RoleSet>,
    after: Option<&str>,
) -> Result<JudgedPage, ()> {
    if job.kind != JobKind::Sync {
        return match deps
            .store
            .generated_rows_page(&job.id, after, PAGE_ROWS)
            .await
        {
            Ok((rows, more)) => Ok(JudgedPage {
                last_user: rows.last().map(|r| r.external_id.clone()),
                more,
                rejected: Vec::new(),
                rejected_rows: HashMap::new(),
                users: rows
                    .into_iter()
                    .map(|r| PlanUser::of_generated(job.kind, r, policy))
                    .collect(),
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the job's rows; planning it later");
                Err(())
            }
        };
    }
    let cap = deps.settings.ingest.max_rows_per_user;
    let page = match deps
        .store
        .pending_rows_page(&job.id, after, PAGE_ROWS, cap)
        .await
    {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the job's rows; planning it later");
            return Err(());
        }
    };
    for o in &page.overflow {
        reject_overflow(deps, &job.id, o, cap).await?;
    }
    let last_user = page.rows.last().map(|r| r.external_id.clone());
    let (mut rejected, mut users) = validate_rows(policy, &page.rows);
    if let Some(missing) = missing_from_org.filter(|m| !m.is_empty()) {
        users = reject_unknown_target_roles(policy, missing, users, &mut rejected);
    }
    let lines: HashSet<i64> = rejected.iter().map(|r| r.line).collect();
    let rejected_rows = page
        .rows
        .into_iter()
        .filter(|a| lines.contains(&(a.line as i64)))
        .map(|a| (a.line as i64, a))
        .collect();
    Ok(JudgedPage {
        last_user,
        more: page.more,
        rejected,
        rejected_rows,
        users: users
            .iter()
            .map(|u| PlanUser::of_batch(u, policy))
            .collect(),
    })
}

/// A page of users, judged.
struct JudgedPage {
    /// The page's last user: the next page starts after them.
    last_user: Option<String>,
    more: bool,
    rejected: Vec<RowResult>,
    rejected_rows: HashMap<i64, Assignment>,
    users: Vec<PlanUser>,
}

pub(crate) async fn run(deps: Deps, mut rx: mpsc::Receiver<PlanJob>, tx: mpsc::Sender<Validated>) {
    while let Some(PlanJob { job, policy, span }) = rx.recv().await {
        let mut after: Option<String> = None;
        let mut first = true;
        // Once per job (the catalog itself is cached per process): a generated job (revert,
        // reconcile) gives back roles users held, and is not checked.
        let missing_from_org = if job.kind == JobKind::Sync {
            super::org_roles::missing_from_org(&deps, &policy)
                .instrument(span.clone())
                .await
        } else {
            None
        };
        loop {
            let page_span = tracing::info_span!(parent: &span, "validate", first);
            let page = next_page(
                &deps,
                &job,
                &policy,
                missing_from_org.as_ref(),
                after.as_deref(),
            )
            .instrument(page_span.clone())
            .await;
            let page = match page {
                Ok(page) => page,
                Err(()) => {
                    let abandon = Validated {
                        job: job.clone(),
                        policy: policy.clone(),
                        page: Page::Abandon,
                        first,
                        rejected: Vec::new(),
                        rejected_rows: HashMap::new(),
                        users: Vec::new(),
                        span: span.clone(),
                    };
                    if tx.send(abandon).await.is_err() {
                        return;
                    }
                    break;
                }
            };
            let last = !page.more;
            after = page.last_user;
            let msg = Validated {
                job: job.clone(),
                policy: policy.clone(),
                page: if last { Page::Last } else { Page::More },
                first,
                rejected: page.rejected,
                rejected_rows: page.rejected_rows,
                users: page.users,
                span: span.clone(),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            record_depth(&deps.metrics, "plan", &tx);
            if last {
                break;
            }
            first = false;
        }
    }
}

/// Judges the rows a store holds for a job, page by page exactly as planning does (so in the
/// same bounded memory), and stores the rejections there; returns the number of users with at
/// least one valid row. For a batch judged without a job: `/v1/validate` and `rolesync
/// validate` receive it into a scratch store first.
pub(crate) async fn judge_stored(
    store: &Store,
    job_id: &str,
    policy: &Policy,
    cap: usize,
) -> Result<u64, StoreError> {
    let mut after: Option<String> = None;
    let mut users = 0u64;
    loop {
        let page = store
            .pending_rows_page(job_id, after.as_deref(), PAGE_ROWS, cap)
            .await?;
        for o in &page.overflow {
            let message = overflow_message(o, cap);
            store
                .reject_rows_beyond(job_id, o, &message, &|_, _| None, 1)
                .await?;
        }
        let (rejected, valid) = validate_rows(policy, &page.rows);
        store.reject_rows(job_id, &rejected).await?;
        users += valid.len() as u64;
        after = page.rows.last().map(|r| r.external_id.clone());
        if !page.more {
            return Ok(users);
        }
    }
}

/// How a row beyond `ingest.max_rows_per_user` is rejected.
fn overflow_message(o: &Overflow, cap: usize) -> String {
    format!(
        "user {} has more than {cap} rows in this batch (ingest.max_rows_per_user); its rows \
         after line {} are rejected",
        o.external_id, o.last_kept_line
    )
}

/// Rejects the rows of a user beyond the cap, with one audit event for them all.
async fn reject_overflow(deps: &Deps, job_id: &str, o: &Overflow, cap: usize) -> Result<(), ()> {
    let message = overflow_message(o, cap);
    let event =
        |first: i64, rows: u64| {
            let detail = format!("{message} ({rows} rows)");
            deps.events.event(
                EventType::RoleSyncRejected,
                RoleSyncRejected::new(job_id, first, ReasonCode::TooManyRowsForUser, &detail)
                    .of_row(&o.external_id, "", ""),
            )
        };
    match deps
        .store
        .reject_rows_beyond(job_id, o, &message, &event, 1)
        .await
    {
        Ok((rows, _)) => {
            tracing::warn!(job.id = %job_id, external_id = %o.external_id, rows, "rows beyond ingest.max_rows_per_user rejected");
            Ok(())
        }
        Err(e) => {
            tracing::error!(job.id = %job_id, error = %e, "cannot reject the rows beyond the cap; planning it later");
            Err(())
        }
    }
}

/// Rejects the rows whose roles, after the policy's expansion, include one of `missing` (roles
/// the target org lacks): `unknown_target_role`, one per row, before any call for the user.
/// A user keeps their other rows; a user left with none is dropped. `rejected` stays in line
/// order.
fn reject_unknown_target_roles(
    policy: &Policy,
    missing: &RoleSet,
    users: Vec<UserRows<Assignment>>,
    rejected: &mut Vec<RowResult>,
) -> Vec<UserRows<Assignment>> {
    let mut kept = Vec::with_capacity(users.len());
    let before = rejected.len();
    for u in users {
        let mut rows = Vec::with_capacity(u.rows.len());
        for r in u.rows {
            // A leaver's row grants nothing: no role of it can be missing from the org.
            let lacking = match r.action {
                Action::Revoke => Default::default(),
                Action::Assign => {
                    crate::policy::org::missing_for(policy, &r.role_template, missing)
                }
            };
            if lacking.is_empty() {
                rows.push(r);
                continue;
            }
            let names = lacking
                .iter()
                .map(|m| format!("\"{m}\""))
                .collect::<Vec<_>>()
                .join(", ");
            rejected.push(RowResult::rejected(
                r.line as i64,
                ReasonCode::UnknownTargetRole,
                format!(
                    "role \"{}\" needs {names}, which the target org does not have by that exact \
                     name; fix the policy or the org (rolesync doctor lists the difference)",
                    r.role_template
                ),
            ));
        }
        kept.extend(UserRows::new(rows));
    }
    if rejected.len() > before {
        rejected.sort_by_key(|r| r.line);
    }
    kept
}

/// Judges every row: the rejected ones with their reason (by line), the others grouped per user
/// (by external id).
///
/// Order of checks per row: external id, then for an `assign` row license tier, role, exact
/// duplicate (a `revoke` row needs nothing more: its role and tier are ignored); then per user:
/// `assign` and `revoke` rows mixed (every row of that user is rejected, `conflicting_actions`:
/// the batch does not say whether the user stays), several tiers (every row of that user is
/// rejected), and entitlement of the role with all the roles it inherits.
pub(crate) fn validate_rows(
    policy: &Policy,
    rows: &[Assignment],
) -> (Vec<RowResult>, Vec<UserRows<Assignment>>) {
    let mut sorted: Vec<&Assignment> = rows.iter().collect();
    sorted.sort_by(|a, b| (a.external_id.as_str(), a.line).cmp(&(b.external_id.as_str(), b.line)));
    let mut rejected = Vec::new();
    let mut users = Vec::new();
    for run in runs_by_user(sorted) {
        validate_user(policy, run, &mut rejected, &mut users);
    }
    rejected.sort_by_key(|r| r.line);
    (rejected, users)
}

/// Judges the rows of one user, in line order.
fn validate_user(
    policy: &Policy,
    rows: Vec<&Assignment>,
    rejected: &mut Vec<RowResult>,
    users: &mut Vec<UserRows<Assignment>>,
) {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut valid: Vec<&Assignment> = Vec::new();
    let mut revokes: Vec<&Assignment> = Vec::new();
    for r in rows {
        let line = r.line as i64;
        if let Some(defect) = &r.defect {
            rejected.push(RowResult::rejected(
                line,
                ReasonCode::MalformedRow,
                defect.clone(),
            ));
        } else if let Err(why) = ExternalId::parse(&r.external_id) {
            rejected.push(RowResult::rejected(
                line,
                ReasonCode::InvalidExternalId,
                why,
            ));
        } else if r.action == Action::Revoke {
            revokes.push(r);
        } else if policy.tier(&r.license_tier).is_none() {
            rejected.push(RowResult::rejected(
                line,
                ReasonCode::UnknownLicenseTier,
                format!("license tier \"{}\" is not in the policy", r.license_tier),
            ));
        } else if policy.role(&r.role_template).is_none() {
            rejected.push(RowResult::rejected(
                line,
                ReasonCode::UnknownRole,
                format!(
                    "role \"{}\" is not in the policy's role catalog",
                    r.role_template
                ),
            ));
        } else if !seen.insert((r.role_template.as_str(), r.license_tier.as_str())) {
            rejected.push(RowResult::rejected(
                line,
                ReasonCode::DuplicateRow,
                "the same row appears earlier in this batch; it is applied once",
            ));
        } else {
            valid.push(r);
        }
    }
    if let Some(leaver) = revokes.first() {
        if valid.is_empty() {
            users.extend(UserRows::new(revokes.into_iter().cloned().collect()));
            return;
        }
        let message = format!(
            "user {} has rows with action \"assign\" and rows with action \"revoke\" in this \
             batch; send either the roles they keep or one revoke row",
            leaver.external_id
        );
        for r in valid.iter().chain(revokes.iter()) {
            rejected.push(RowResult::rejected(
                r.line as i64,
                ReasonCode::ConflictingActions,
                message.clone(),
            ));
        }
        return;
    }
    let Some(first) = valid.first() else { return };
    let tiers: BTreeSet<&str> = valid.iter().map(|r| r.license_tier.as_str()).collect();
    if tiers.len() > 1 {
        let list = tiers
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        for r in &valid {
            rejected.push(RowResult::rejected(
                r.line as i64,
                ReasonCode::ConflictingLicenseTier,
                format!(
                    "user {} has rows with different license tiers: {list}",
                    r.external_id
                ),
            ));
        }
        return;
    }
    let Some(tier) = policy.tier(&first.license_tier) else {
        return;
    };
    let mut entitled: Vec<Assignment> = Vec::new();
    for r in valid {
        let closure = policy.closure(&r.role_template);
        let missing = policy.not_entitled(tier, &closure);
        if missing.is_empty() {
            entitled.push(r.clone());
        } else {
            rejected.push(RowResult::rejected(
                r.line as i64,
                ReasonCode::RoleNotEntitled,
                format!(
                    "license tier \"{}\" does not allow {} (needed by role \"{}\")",
                    tier.name,
                    missing
                        .iter()
                        .map(|m| format!("\"{m}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.role_template
                ),
            ));
        }
    }
    // Separation of duties within the batch: whatever the user holds now, a batch that gives
    // them every role of a rule would end in a conflict in either mode (merge keeps what the
    // batch gives, replace gives exactly that), so it is rejected here, before any call.
    let asked: crate::policy::RoleSet = entitled.iter().map(|r| r.role_template.clone()).collect();
    if let Some(rule) = policy.sod_violation(&asked) {
        let message = format!(
            "{}; this batch gives user {} all of them",
            rule.conflict_message(),
            entitled.first().map_or("", |r| r.external_id.as_str())
        );
        for r in &entitled {
            rejected.push(RowResult::rejected(
                r.line as i64,
                ReasonCode::SodConflict,
                message.clone(),
            ));
        }
        return;
    }
    users.extend(UserRows::new(entitled));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, external_id: &str, role: &str) -> Assignment {
        Assignment {
            line,
            external_id: external_id.into(),
            role_template: role.into(),
            license_tier: "Supervisor".into(),
            action: crate::domain::Action::Assign,
            effective_at_ms: None,
            defect: None,
        }
    }

    #[test]
    fn a_revoke_row_needs_no_role_and_mixed_actions_reject_every_row_of_the_user() {
        let policy = Policy::from_toml_str(include_str!("../../config/policy.toml"))
            .unwrap_or_else(|e| panic!("the shipped policy loads: {e}"));
        let revoke = |line: u64, id: &str| Assignment {
            role_template: String::new(),
            license_tier: String::new(),
            action: Action::Revoke,
            ..row(line, id, "")
        };
        let rows = vec![
            revoke(2, "L"),
            revoke(3, "M"),
            row(4, "M", "Agent"),
            row(5, "A", "Agent"),
        ];
        let (rejected, users) = validate_rows(&policy, &rows);
        let codes: Vec<(i64, Option<ReasonCode>)> = rejected
            .iter()
            .map(|r| (r.line, r.reason.as_ref().map(|(c, _)| *c)))
            .collect();
        assert_eq!(
            codes,
            [
                (3, Some(ReasonCode::ConflictingActions)),
                (4, Some(ReasonCode::ConflictingActions)),
            ]
        );
        let kept: Vec<(&str, bool)> = users
            .iter()
            .map(|u| (u.external_id.as_str(), u.revokes()))
            .collect();
        assert_eq!(kept, [("A", false), ("L", true)]);
        // A leaver wants no role, in `replace` whatever the job's mode.
        assert!(users[1].desired(&policy).is_empty());
        assert_eq!(
            users[1].mode(crate::domain::Mode::Merge),
            crate::domain::Mode::Replace
        );
    }

    #[test]
    fn rows_needing_a_role_the_org_lacks_are_rejected_and_the_others_kept() {
        let policy = Policy::from_toml_str(include_str!("../../config/policy.toml"))
            .unwrap_or_else(|e| panic!("the shipped policy loads: {e}"));
        let rows = vec![
            row(2, "A", "Reporting"),
            row(3, "A", "Supervisor"),
            row(4, "B", "Supervisor"),
            row(5, "C", "Agent"),
        ];
        let (mut rejected, users) = validate_rows(&policy, &rows);
        assert!(rejected.is_empty());
        // The org lacks "Supervisor": lines 3 and 4 name it; B has nothing left.
        let missing: RoleSet = ["Supervisor".to_owned()].into_iter().collect();
        let users = reject_unknown_target_roles(&policy, &missing, users, &mut rejected);
        let lines: Vec<(i64, Option<ReasonCode>)> = rejected
            .iter()
            .map(|r| (r.line, r.reason.as_ref().map(|(c, _)| *c)))
            .collect();
        assert_eq!(
            lines,
            [
                (3, Some(ReasonCode::UnknownTargetRole)),
                (4, Some(ReasonCode::UnknownTargetRole)),
            ]
        );
        let kept: Vec<(String, Vec<i64>)> = users
            .iter()
            .map(|u| (u.external_id.clone(), u.lines().collect()))
            .collect();
        assert_eq!(kept, [("A".into(), vec![2]), ("C".into(), vec![5])]);
    }
}
