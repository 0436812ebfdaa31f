//! Stage 2: cuts the users into chunks of `sync.chunk_size` page by page (each page's rejected
//! rows and chunk numbers committed as it comes, the chunks not yet claimable), then chooses
//! how to read the users (per-user lookups or one directory scan, see `reads`), estimates the
//! calls the job will spend, checks the approval bounds, and makes the chunks claimable in one
//! last transaction. From there the chunks live in the store, where any worker of any replica
//! may claim them. A planner that dies midway leaves chunks no one can claim; the next
//! planning of the job clears them and starts over.

use super::reads::{ReadPlan, chunk_snapshot, find_user, plan_reads};
use super::users::group_users;
use super::validate::{Page, Validated};
use super::{Deps, lifecycle};
use crate::audit::events::RoleSyncRejected;
use crate::domain::{
    Approval, ApprovalReason, Estimate, EventType, JobKind, JobStatus, Leavers, Mode, Outcome,
    PrivilegedGrants, ReadMethod, WriteApi,
};
use crate::policy::Policy;
use crate::scim::{CallTally, ScimError};
use crate::store::{JobDeltas, JobPlan, JobRecord, OutboxEvent, PlanPage};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// A job being planned, page by page. Holds nothing per user (the rows are in the store, and so
/// is the directory scan), so planning a job of any size takes bounded memory.
struct Planning {
    job: JobRecord,
    policy: Arc<Policy>,
    users: i64,
    /// Chunks used so far (numbers `0..chunks`).
    chunks: i64,
    /// The chunk being filled with the job's other users, and the one being filled with its
    /// leavers (`revoke` users). Leavers get chunks of their own: a roster's leavers are spread
    /// through the alphabet, and the Authorization path sends one removal per role per chunk,
    /// so 200 leavers among 10 000 users cost 2 calls instead of one per chunk they fall in
    /// (100). On the SCIM path a chunk's make-up changes no call count.
    open: OpenChunk,
    open_leavers: OpenChunk,
    rejected: u64,
    /// Privileged roles the job's users ask for, and how many users ask for one.
    privileged_roles: std::collections::BTreeSet<String>,
    privileged_users: u64,
    /// Users the job takes roles away from, when its rows tell without a read (a revert).
    known_removals: u64,
    /// Leavers (`revoke` users), and the first `Leavers::SAMPLE` of them (users come in
    /// `external_id` order).
    leavers: u64,
    leaver_sample: Vec<String>,
    /// Bulk calls the Authorization path would cost (`BulkCount`): closed chunks' in `bulk`.
    bulk: BulkCount,
    /// Keeps the planning lease renewed while this planning lives (`live`).
    _live: super::live::LivePlan,
}

pub(crate) async fn run(deps: Deps, mut rx: mpsc::Receiver<Validated>) {
    let mut current: Option<Planning> = None;
    // A job whose planning was abandoned: its remaining pages are skipped.
    let mut abandoned: Option<String> = None;
    while let Some(r) = rx.recv().await {
        let span = r.span.clone();
        plan_one_page(&deps, &mut current, &mut abandoned, r)
            .instrument(span)
            .await;
    }
}

/// One page of a job, inside the job's `plan` span; after its last page, the plan is finished.
async fn plan_one_page(
    deps: &Deps,
    current: &mut Option<Planning>,
    abandoned: &mut Option<String>,
    r: Validated,
) {
    let job_id = r.job.id.clone();
    if r.first {
        *current = None;
        *abandoned = None;
    }
    if abandoned.as_deref() == Some(job_id.as_str()) {
        return;
    }
    if r.page == Page::Abandon {
        *current = None;
        *abandoned = Some(job_id);
        return;
    }
    let state = current.get_or_insert_with(|| Planning {
        job: r.job.clone(),
        policy: r.policy.clone(),
        users: 0,
        chunks: 0,
        open: OpenChunk::default(),
        open_leavers: OpenChunk::default(),
        rejected: 0,
        privileged_roles: Default::default(),
        privileged_users: 0,
        known_removals: 0,
        leavers: 0,
        leaver_sample: Vec::new(),
        bulk: BulkCount::default(),
        _live: deps.live.plan(&r.job.id),
    });
    let page = plan_page(deps, state, &r);
    match deps
        .store
        .save_plan_page(&job_id, &deps.owner, deps.lease_ms(), &page)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("lost the planning lease; another planner has the job");
            *current = None;
            *abandoned = Some(job_id);
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot save a page of the job's plan; it will be planned again after a backoff");
            release_plan(deps, &job_id).await;
            *current = None;
            *abandoned = Some(job_id);
            return;
        }
    }
    if r.page == Page::Last
        && let Some(state) = current.take()
    {
        finish(deps, state).await;
    }
}

/// How long a planning given back after an error waits before it is claimed again.
const PLAN_ERROR_BACKOFF_MS: i64 = 5_000;

/// Gives the job's planning back with a backoff (never left leased on an error).
async fn release_plan(deps: &Deps, job_id: &str) {
    let retry_at = crate::store::now_ms() + PLAN_ERROR_BACKOFF_MS;
    if let Err(e) = deps.store.release_plan(job_id, &deps.owner, retry_at).await {
        tracing::warn!(error = %e, "cannot give the planning back; its lease runs out");
    }
}

/// The rejected rows of a page with their events, and the chunk of each of its users.
fn plan_page(deps: &Deps, state: &mut Planning, r: &Validated) -> PlanPage {
    let chunk_size = chunk_size(&deps.settings);
    let bulk_max = deps.settings.target.bulk_max_subjects;
    let mut chunks: Vec<(i64, Vec<i64>)> = Vec::new();
    for u in &r.users {
        let open = if u.revokes {
            &mut state.open_leavers
        } else {
            &mut state.open
        };
        let chunk_no = open.place(
            &mut state.chunks,
            chunk_size,
            &state.policy,
            state.job.mode,
            bulk_max,
        );
        match chunks.last_mut() {
            Some((n, lines)) if *n == chunk_no => lines.extend(u.lines.iter().copied()),
            _ => chunks.push((chunk_no, u.lines.clone())),
        }
        state.users += 1;
        if u.removes == Some(true) {
            state.known_removals += 1;
        }
        if u.revokes {
            state.leavers += 1;
            if state.leaver_sample.len() < Leavers::SAMPLE {
                state.leaver_sample.push(u.external_id.clone());
            }
            open.bulk.revokes = true;
        }
        // What the user may be granted: the desired set of a batch, the roles a revert gives
        // back; the bulk count groups users by these roles.
        open.bulk.add_user(&u.grants);
        let privileged = state.policy.privileged_in(&u.grants);
        if !privileged.is_empty() {
            state.privileged_users += 1;
            state.privileged_roles.extend(privileged);
        }
    }
    state.rejected += r.rejected.len() as u64;
    let events: Vec<OutboxEvent> = r
        .rejected
        .iter()
        .filter_map(|row| {
            let (code, message) = row.reason.as_ref()?;
            let mut data = RoleSyncRejected::new(&r.job.id, row.line, *code, message);
            if let Some(a) = r.rejected_rows.get(&row.line) {
                data = data.of_row(&a.external_id, &a.role_template, &a.license_tier);
            }
            deps.events.event_as(
                EventType::RoleSyncRejected,
                data,
                r.job.submitted_by.as_ref(),
            )
        })
        .collect();
    PlanPage {
        first: r.first,
        rejected: r.rejected.clone(),
        chunks,
        events,
    }
}

/// Users per chunk: `sync.chunk_size`, raised to `target.bulk_max_subjects` when the
/// Authorization path is enabled, so that a chunk's users of one role fit one bulk call (the
/// path groups writes per chunk). Chunks are units of work and leases; their size changes no
/// call count of the SCIM path.
fn chunk_size(settings: &crate::configuration::Settings) -> usize {
    let size = settings.sync.chunk_size.max(1);
    match settings.target.write_api {
        WriteApi::Scim => size,
        WriteApi::Authorization => size.max(settings.target.bulk_max_subjects),
    }
}

/// Counts, chunk by chunk, the bulk calls the Authorization path would cost at most: per chunk
/// and per role, ⌈users / bulk_max_subjects⌉ for the grants (every role a user of the chunk is
/// to hold, as if none held it yet) and, for a `replace` job, for the removals (every managed,
/// unprotected role, from the users not to hold it). The reads are not known here, so this is
/// an upper bound, as the SCIM path's one write per user is.
/// A chunk being filled: its number, its users so far, and its bulk count.
#[derive(Default)]
struct OpenChunk {
    no: Option<i64>,
    users: usize,
    bulk: BulkCount,
}

impl OpenChunk {
    /// The chunk the next user goes to: this one, or, when it is full (or none is open yet), a
    /// new one numbered `chunks`, after its bulk count is closed.
    fn place(
        &mut self,
        chunks: &mut i64,
        chunk_size: usize,
        policy: &Policy,
        mode: Mode,
        bulk_max: usize,
    ) -> i64 {
        let no = match self.no {
            Some(no) if self.users < chunk_size => no,
            _ => {
                self.bulk.close_chunk(policy, mode, bulk_max);
                let no = *chunks;
                *chunks += 1;
                self.no = Some(no);
                self.users = 0;
                no
            }
        };
        self.users += 1;
        no
    }
}

#[derive(Default)]
struct BulkCount {
    /// Closed chunks' calls.
    calls: i64,
    /// The open chunk: its users, and per role how many of them are to hold it.
    users: u64,
    roles: std::collections::HashMap<String, u64>,
    /// The open chunk has a leaver: its managed roles are removed whatever the job's mode.
    revokes: bool,
}

impl BulkCount {
    fn add_user(&mut self, desired: &crate::policy::RoleSet) {
        self.users += 1;
        for r in desired {
            *self.roles.entry(r.clone()).or_default() += 1;
        }
    }

    fn close_chunk(&mut self, policy: &Policy, mode: Mode, max: usize) {
        if self.users == 0 {
            return;
        }
        let roles = std::mem::take(&mut self.roles);
        let revokes = std::mem::take(&mut self.revokes);
        let mut counts: Vec<u64> = roles.values().copied().collect();
        // A chunk with a leaver counts removals as a `replace` chunk does (an upper bound).
        if mode == Mode::Replace || revokes {
            counts.extend(
                policy
                    .roles()
                    .iter()
                    .filter(|r| !policy.protected_roles().contains(&r.name))
                    .map(|r| self.users - roles.get(&r.name).copied().unwrap_or(0))
                    .filter(|n| *n > 0),
            );
        }
        self.calls += super::bulk::calls_for(counts, max);
        self.users = 0;
    }
}

/// After the last page: chooses the reads, checks the approval bounds, and makes the chunks
/// claimable.
async fn finish(deps: &Deps, mut state: Planning) {
    let job_id = state.job.id.clone();
    let bulk_max = deps.settings.target.bulk_max_subjects;
    for open in [&mut state.open, &mut state.open_leavers] {
        open.bulk
            .close_chunk(&state.policy, state.job.mode, bulk_max);
        state.bulk.calls += std::mem::take(&mut open.bulk.calls);
    }
    // Grants can be read only for a job the Authorization path will write: enabled, writing,
    // and its bulk calls fewer than the PATCHes they replace.
    let grants = deps.settings.target.write_api == WriteApi::Authorization
        && !state.job.dry_run
        && state.bulk.calls + AUTHZ_SETUP_CALLS < state.users;
    let reads = plan_reads(deps, &job_id, state.users.max(0) as u64, grants).await;
    let mut plan = build_plan(deps, &state, &reads);
    let privileged = privileged_grants(&state);
    match approval_check(deps, &state, &reads).await {
        Ok(removals) => {
            let Some((approval, deltas)) = approval_of(&state, removals, privileged) else {
                return finish_plan(deps, state, reads, plan).await;
            };
            if approval.required {
                plan.status = JobStatus::AwaitingApproval;
                tracing::warn!(approval = ?approval, "job held for approval");
            }
            plan.approval = Some(approval);
            plan.deltas.scim_requests += deltas.scim_requests;
            plan.deltas.scim_retries += deltas.scim_retries;
            plan.deltas.scim_rate_limited += deltas.scim_rate_limited;
        }
        Err(e) => {
            // Planned again after a backoff, when the target answers.
            tracing::warn!(error = %e, "cannot check the approval bounds; planning later");
            release_plan(deps, &job_id).await;
            return;
        }
    }
    finish_plan(deps, state, reads, plan).await;
}

/// Makes the plan claimable (the last step of `finish`).
async fn finish_plan(deps: &Deps, state: Planning, reads: ReadPlan, plan: JobPlan) {
    let job_id = state.job.id.clone();
    match deps.store.finish_plan(&job_id, &deps.owner, &plan).await {
        Ok(true) => {
            deps.pin_policy(&job_id, state.policy.clone());
            deps.metrics
                .assignments_total
                .with_label_values(&[Outcome::Rejected.as_str()])
                .inc_by(state.rejected);
            tracing::info!(
                users = plan.users_total,
                chunks = state.chunks,
                rejected = state.rejected,
                strategy = reads.strategy.as_str(),
                reads = reads.reads,
                write_api = plan
                    .estimate
                    .as_ref()
                    .map_or("scim", |e| e.write_api.as_str()),
                "job planned"
            );
            lifecycle::finish_if_done(deps, &job_id).await;
            deps.wake_claimer.notify_waiters();
            deps.wake_dispatcher.notify_one();
        }
        Ok(false) => {
            tracing::warn!("lost the planning lease; another planner has the job")
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot save the job's plan; it will be planned again after a backoff");
            release_plan(deps, &job_id).await;
        }
    }
}

/// The privileged roles the job's users ask for, if any.
fn privileged_grants(state: &Planning) -> Option<PrivilegedGrants> {
    (state.privileged_users > 0).then(|| PrivilegedGrants {
        roles: state.privileged_roles.iter().cloned().collect(),
        users: state.privileged_users,
        allowed_by_key: state.job.privileged_allowed,
    })
}

/// Whether the job waits for approval, and why: the removal bounds (a `replace` job,
/// `approval_check`) and privileged grants in any mode, unless the submitting key carries
/// `roles:privileged`. A dry run writes nothing and never waits. None when neither applies.
fn approval_of(
    state: &Planning,
    removals: Option<(bool, Approval, JobDeltas)>,
    privileged: Option<PrivilegedGrants>,
) -> Option<(Approval, JobDeltas)> {
    let (mut approval, deltas) = match removals {
        Some((held, mut a, d)) => {
            if held {
                a.reasons.push(ApprovalReason::Removals);
            }
            (a, d)
        }
        None => (Approval::default(), JobDeltas::default()),
    };
    if let Some(p) = privileged {
        if !p.allowed_by_key && !state.job.dry_run {
            approval.reasons.push(ApprovalReason::PrivilegedRoles);
        }
        approval.privileged = Some(p);
    }
    if approval.reasons.is_empty()
        && approval.threshold_users.is_none()
        && approval.privileged.is_none()
    {
        return None;
    }
    approval.required = !approval.reasons.is_empty();
    Some((approval, deltas))
}

/// Calls the Authorization path spends before its first write: the home division and the role
/// catalog (one page up to 500 roles), at most once per process and catalog lifetime (the
/// catalog may already be cached by the planning check of the org's roles, `org_roles`).
const AUTHZ_SETUP_CALLS: i64 = 2;

/// Which path writes the job, by counting calls (reads + writes) for both; ties go to SCIM,
/// which needs no extra permission. A job whose users were read from grants is written through
/// the Authorization path whatever the count (`build_plan`): that read has no versions for
/// SCIM's `If-Match`, and it was chosen only where that path wins. `(chosen, writes, scim path calls, authorization path
/// calls)`; the last is None while `target.write_api = "scim"`.
fn choose_write_api(
    setting: WriteApi,
    reads: i64,
    scim_writes: i64,
    bulk_writes: i64,
) -> (WriteApi, i64, i64, Option<i64>) {
    let scim = reads + scim_writes;
    match setting {
        WriteApi::Scim => (WriteApi::Scim, scim_writes, scim, None),
        WriteApi::Authorization => {
            let authz = reads + AUTHZ_SETUP_CALLS + bulk_writes;
            if authz < scim {
                (WriteApi::Authorization, bulk_writes, scim, Some(authz))
            } else {
                (WriteApi::Scim, scim_writes, scim, Some(authz))
            }
        }
    }
}

fn build_plan(deps: &Deps, state: &Planning, reads: &ReadPlan) -> JobPlan {
    let users = state.users;
    // At most one write per user (plus re-reads and rewrites on version conflicts).
    let scim_writes = if state.job.dry_run { 0 } else { users };
    let bulk_writes = if state.job.dry_run {
        0
    } else {
        state.bulk.calls
    };
    let (mut write_api, mut writes_max, scim_path_calls, authorization_path_calls) =
        choose_write_api(
            deps.settings.target.write_api,
            reads.reads,
            scim_writes,
            bulk_writes,
        );
    if reads.strategy == ReadMethod::Grants {
        write_api = WriteApi::Authorization;
        writes_max = bulk_writes;
    }
    let interval = deps.scim.call_interval().as_secs_f64();
    let (spent, retries, rate_limited) = reads.tally.snapshot();
    // What is left to spend once the plan is saved: the chunks' lookups and writes.
    let remaining = reads.lookups + writes_max;
    let estimate = Estimate {
        strategy: reads.strategy,
        reads: reads.reads,
        writes_max,
        eta_secs: (remaining as f64 * interval).ceil() as i64,
        lookups: reads.lookups,
        org_users: reads.org_users,
        page_size: reads.page_size,
        scan_pages: reads.scan_pages,
        requests_per_minute: deps.settings.target.requests_per_minute,
        privileged: privileged_grants(state),
        write_api,
        scim_path_calls: Some(scim_path_calls),
        authorization_path_calls,
        leavers: (state.leavers > 0).then(|| Leavers {
            users: state.leavers,
            sample: state.leaver_sample.clone(),
        }),
    };
    JobPlan {
        status: JobStatus::Running,
        users_total: users,
        estimate: Some(estimate),
        approval: None,
        deltas: JobDeltas {
            scim_requests: spent,
            scim_retries: retries,
            scim_rate_limited: rate_limited,
            ..Default::default()
        },
    }
}

/// The approval bounds of a job that may take roles away (the policy's `[approval]`): a
/// `replace` job (sync or reconcile), a revert, or a job with leavers (`revoke` users, sent or
/// generated for a roster `full`), in either mode. One that would remove roles from more users
/// than `max_removed_users`, or than `max_removal_fraction` of the org, waits in
/// `awaiting_approval` before any write. A revert knows whom it takes roles from without a
/// read (its rows say what the reverted job added). In a `merge` job only the leavers may lose
/// roles: only they are counted, and only they are read ahead.
///
/// The org size comes from the read planning's probe, else costs one call (`count=0`). A job
/// with fewer users than the bound cannot exceed it and is not read ahead. A larger one is read
/// ahead before anything is written: from the directory snapshot when the job scans (no call),
/// else one lookup per user. The sync reads each user again before writing (the snapshot too
/// is only a hint: a stale version answers 409/412 and that user is re-read).
async fn approval_check(
    deps: &Deps,
    state: &Planning,
    reads: &ReadPlan,
) -> anyhow::Result<Option<(bool, Approval, JobDeltas)>> {
    // Users who may lose roles: every user of a `replace` job or a revert; only the leavers
    // (`revoke`) of a `merge` job, whose other users only gain roles.
    let candidates = match state.job.kind {
        JobKind::Sync | JobKind::Reconcile if state.job.mode == Mode::Merge => state.leavers,
        JobKind::Sync | JobKind::Reconcile | JobKind::Revert => state.users as u64,
    };
    if candidates == 0 || state.job.dry_run {
        return Ok(None);
    }
    let bounds = state.policy.approval();
    let tally = std::sync::Arc::new(CallTally::default());
    let org_users = match reads.org_users {
        Some(n) => n,
        None => {
            let n = deps.scim.count_users(&tally).await?;
            deps.reads.remember_org_size(n);
            n
        }
    };
    let by_fraction = (bounds.max_removal_fraction * org_users as f64).floor() as u64;
    let threshold = bounds.max_removed_users.min(by_fraction);
    let mut removing = 0u64;
    let read_ahead = candidates > threshold;
    if read_ahead && state.job.kind == JobKind::Revert {
        removing = state.known_removals;
    } else if read_ahead {
        // Chunk by chunk from the store, so memory holds one chunk's users at a time.
        for chunk_no in 0..state.chunks {
            let items = deps.store.chunk_items(&state.job.id, chunk_no).await?;
            let wanted = group_users(items);
            let ids: Vec<&str> = wanted.iter().map(|u| u.external_id.as_str()).collect();
            let snapshot = chunk_snapshot(deps, &state.job.id, reads.strategy, &ids)
                .await
                .map(Arc::new);
            let results: Vec<Result<bool, ScimError>> = futures::stream::iter(wanted)
                .map(|u| {
                    let policy = state.policy.clone();
                    let tally = tally.clone();
                    let snapshot = snapshot.clone();
                    let mode = u.mode(state.job.mode);
                    async move {
                        // A `merge` user only gains roles: no read to tell.
                        if mode == Mode::Merge {
                            return Ok(false);
                        }
                        let found =
                            find_user(deps, snapshot.as_deref(), &u.external_id, &tally).await?;
                        Ok(match found.as_slice() {
                            [user] => {
                                let current = user.role_names();
                                let desired = u.desired(&policy);
                                let after = policy.final_roles(Mode::Replace, &current, &desired);
                                current.difference(&after).next().is_some()
                            }
                            _ => false,
                        })
                    }
                })
                .buffer_unordered(deps.settings.target.max_concurrency)
                .collect()
                .await;
            for res in results {
                if res? {
                    removing += 1;
                }
            }
        }
    }
    let held = removing > threshold;
    let (requests, retries, rate_limited) = tally.snapshot();
    let approval = Approval {
        required: held,
        reasons: Vec::new(),
        users_losing_roles: read_ahead.then_some(removing),
        threshold_users: Some(threshold),
        org_users: Some(org_users),
        max_removed_users: Some(bounds.max_removed_users),
        max_removal_fraction: Some(bounds.max_removal_fraction),
        privileged: None,
    };
    let deltas = JobDeltas {
        scim_requests: requests,
        scim_retries: retries,
        scim_rate_limited: rate_limited,
        ..Default::default()
    };
    Ok(Some((held, approval, deltas)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_api_is_chosen_by_counting_calls() {
        // 10 000 users, 101 reads: 100 bulk calls against 10 000 PATCHes.
        assert_eq!(
            choose_write_api(WriteApi::Authorization, 101, 10_000, 100),
            (WriteApi::Authorization, 100, 10_101, Some(203))
        );
        // One user: a PATCH beats the setup calls plus one grant.
        assert_eq!(
            choose_write_api(WriteApi::Authorization, 1, 1, 1),
            (WriteApi::Scim, 1, 2, Some(4))
        );
        // Not enabled: never chosen, not counted.
        assert_eq!(
            choose_write_api(WriteApi::Scim, 101, 10_000, 100),
            (WriteApi::Scim, 10_000, 10_101, None)
        );
    }

    #[test]
    fn leavers_fill_chunks_of_their_own_and_each_kind_opens_a_new_one_when_full() {
        let policy = Policy::from_toml_str(include_str!("../../config/policy.toml"))
            .unwrap_or_else(|e| panic!("the shipped policy: {e}"));
        let (mut chunks, mut movers, mut leavers) =
            (0i64, OpenChunk::default(), OpenChunk::default());
        let mut place = |leaver: bool| {
            let open = if leaver { &mut leavers } else { &mut movers };
            open.place(&mut chunks, 2, &policy, Mode::Merge, 100)
        };
        // Movers and leavers interleaved, chunks of two.
        let placed: Vec<i64> = [false, true, false, true, false, true, true]
            .into_iter()
            .map(&mut place)
            .collect();
        assert_eq!(placed, vec![0, 1, 0, 1, 2, 3, 3]);
        assert_eq!(chunks, 4);
    }
}
