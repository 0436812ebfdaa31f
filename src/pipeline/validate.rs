//! Stage 1: each row against the policy, without calling the target. Shared with
//! `POST /v1/validate` and `rolesync validate`, so a batch is judged the same way everywhere.

use super::Deps;
use super::intake::PlanJob;
use super::record_depth;
use crate::domain::{Assignment, ExternalId, ReasonCode};
use crate::policy::{Policy, RoleSet};
use crate::store::{JobRecord, RowResult};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The valid rows of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRows {
    pub external_id: String,
    pub tier: String,
    pub lines: Vec<i64>,
    pub roles: RoleSet,
}

/// Where a page stands in its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// More pages of this job follow.
    More,
    /// The job's last page.
    Last,
    /// The job's rows could not be read: drop what was planned so far; the planning lease
    /// expires and the job is planned again.
    Abandon,
}

/// One page of a job's users, validated. A user's rows are always in one page.
pub struct Validated {
    pub job: JobRecord,
    pub policy: Arc<Policy>,
    pub page: Page,
    /// The first page of the job.
    pub first: bool,
    pub rejected: Vec<RowResult>,
    /// The rejected rows by line, for their audit events.
    pub rejected_rows: HashMap<i64, Assignment>,
    pub users: Vec<UserRows>,
}

/// Pending rows read and judged at a time: a job of any size is planned in bounded memory.
pub const PAGE_ROWS: usize = 5000;

pub async fn run(deps: Deps, mut rx: mpsc::Receiver<PlanJob>, tx: mpsc::Sender<Validated>) {
    while let Some(PlanJob { job, policy }) = rx.recv().await {
        let mut after: Option<String> = None;
        let mut first = true;
        loop {
            let (rows, more) = match deps
                .store
                .pending_rows_page(&job.id, after.as_deref(), PAGE_ROWS)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(job.id = %job.id, error = %e, "cannot read the job's rows; planning it later");
                    let abandon = Validated {
                        job: job.clone(),
                        policy: policy.clone(),
                        page: Page::Abandon,
                        first,
                        rejected: Vec::new(),
                        rejected_rows: HashMap::new(),
                        users: Vec::new(),
                    };
                    if tx.send(abandon).await.is_err() {
                        return;
                    }
                    break;
                }
            };
            let last = !more;
            after = rows.last().map(|r| r.external_id.clone());
            let (rejected, users) = validate_rows(&policy, &rows);
            let lines: HashSet<i64> = rejected.iter().map(|r| r.line).collect();
            let rejected_rows = rows
                .into_iter()
                .filter(|a| lines.contains(&(a.line as i64)))
                .map(|a| (a.line as i64, a))
                .collect();
            let msg = Validated {
                job: job.clone(),
                policy: policy.clone(),
                page: if last { Page::Last } else { Page::More },
                first,
                rejected,
                rejected_rows,
                users,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            record_depth(&deps.metrics, "resolve", &tx);
            if last {
                break;
            }
            first = false;
        }
    }
}

/// Judges every row: the rejected ones with their reason, the others grouped per user.
///
/// Order of checks per row: external id, license tier, role, exact duplicate, then per user:
/// several tiers (every row of that user is rejected), and entitlement of the role with all
/// the roles it inherits.
pub fn validate_rows(policy: &Policy, rows: &[Assignment]) -> (Vec<RowResult>, Vec<UserRows>) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        (rows[a].external_id.as_str(), rows[a].line)
            .cmp(&(rows[b].external_id.as_str(), rows[b].line))
    });
    let mut rejected = Vec::new();
    let mut users = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let ext = rows[order[i]].external_id.as_str();
        let mut j = i;
        while j < order.len() && rows[order[j]].external_id == ext {
            j += 1;
        }
        validate_user(
            policy,
            order[i..j].iter().map(|&k| &rows[k]),
            &mut rejected,
            &mut users,
        );
        i = j;
    }
    rejected.sort_by_key(|r| r.line);
    (rejected, users)
}

fn validate_user<'a>(
    policy: &Policy,
    rows: impl Iterator<Item = &'a Assignment>,
    rejected: &mut Vec<RowResult>,
    users: &mut Vec<UserRows>,
) {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut valid: Vec<&Assignment> = Vec::new();
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
    let mut user = UserRows {
        external_id: first.external_id.trim().to_owned(),
        tier: first.license_tier.clone(),
        lines: Vec::new(),
        roles: RoleSet::new(),
    };
    for r in valid {
        let closure = policy.closure(&r.role_template);
        let missing = policy.not_entitled(tier, &closure);
        if missing.is_empty() {
            user.lines.push(r.line as i64);
            user.roles.insert(r.role_template.clone());
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
    if !user.lines.is_empty() {
        users.push(user);
    }
}
