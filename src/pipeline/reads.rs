//! How a job reads the users' current roles, chosen by counting calls.
//!
//! - **lookup**: one `filter=externalId eq "…"` per user: `users` reads.
//! - **scan**: page through the whole directory once (`attributes=id,externalId,roles,
//!   meta.version`, the largest page the target allows): `ceil(org / page)` reads, whatever the
//!   job's size.
//! - **grants** (only for a job the Authorization path writes): the home division's grants,
//!   500 a call, `ceil(grants / 500)` reads, for the users whose ids are known; the others are
//!   looked up. Division grants name users by id, so it needs ids seen earlier (`user_ids`).
//!
//! The planner learns the org size with one call that is also the scan's first page
//! (`startIndex=1&count=page` answers `totalResults` like `count=0` does, and its users are not
//! wasted when the scan wins), then takes the cheaper way. The largest page is
//! `filter.maxResults` of `ServiceProviderConfig`, read once per process (else 25, the Genesys
//! default). A job of one user never probes; neither does a job much smaller than the org when
//! the org size is known from a recent probe.
//!
//! The scan's snapshot lives in the store (`Store::save_scanned`), written page by page and
//! holding only the users the job names, so that planning holds no per-user state and a job
//! over a million users takes bounded memory; a chunk reads its own users' part back
//! (`chunk_snapshot`), on whichever replica runs it. Correctness never depends on it: a chunk
//! run where it is missing or too old (`sync.snapshot_max_age_secs`) looks its users up; a
//! stale version makes the PATCH answer 409/412 and the conflict path re-reads that user. A
//! user absent from the snapshot is looked up before being called `not_found`: the listing
//! omits inactive users, and users created or deleted during the scan shift the pages.
//!
//! **The externalId → id cache serves the read of grants only.** On the SCIM path a cached id
//! would let a worker `GET /users/{id}` instead of filtering by externalId: still one call, so
//! it saves nothing, and it would cost more when wrong (a deleted and re-created user: 404,
//! then the lookup anyway) and hide a duplicate externalId created since (`ambiguous_user` is
//! only visible to the filter). The read of grants has no other way to know whose grants it
//! lists: with `target.write_api = "authorization"`, the ids seen by scans and lookups are kept
//! in the store; an externalId is trusted with an id only when exactly one was seen for it
//! within `sync.user_id_max_age_secs`, a lookup replaces what was known, and an id the target
//! refuses on a write is forgotten and its user looked up (`sync::write_deferred`): checked
//! on use. Current roles and versions are never kept across jobs.
use super::Deps;
use crate::configuration::ReadStrategy;
use crate::domain::{ReadMethod, WriteApi};
use crate::scim::model::{ListResponse, Meta, RoleRef};
use crate::scim::{CallTally, ScimClient, ScimError, ScimUser};
use crate::store::{Analyzed, ScannedUser};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The page size when the target does not say (`count` default of Genesys).
pub(crate) const DEFAULT_PAGE: u64 = 25;
/// An org size learnt this recently is trusted to skip the probe of a small job.
const ORG_SIZE_TTL: Duration = Duration::from_secs(3600);

/// What one chunk's users looked like to the job's directory scan, read back from the store
/// (`chunk_snapshot`). Users share the role lists they hold in common.
#[derive(Default)]
pub(crate) struct Snapshot {
    /// externalId → every user carrying it.
    users: HashMap<Box<str>, Vec<SnapUser>>,
}

/// What the sync needs of a scanned user.
struct SnapUser {
    id: Box<str>,
    version: Option<Box<str>>,
    /// Shared between the users holding the same roles.
    roles: Arc<[RoleRef]>,
}

impl Snapshot {
    fn of(scanned: Vec<ScannedUser>) -> Snapshot {
        let mut role_sets: HashMap<Vec<String>, Arc<[RoleRef]>> = HashMap::new();
        let mut users: HashMap<Box<str>, Vec<SnapUser>> = HashMap::new();
        for u in scanned {
            let roles = role_sets
                .entry(u.roles)
                .or_insert_with_key(|names| {
                    names.iter().map(|n| RoleRef { value: n.clone() }).collect()
                })
                .clone();
            users
                .entry(u.external_id.into_boxed_str())
                .or_default()
                .push(SnapUser {
                    id: u.user_id.into_boxed_str(),
                    version: u.version.map(String::into_boxed_str),
                    roles,
                });
        }
        Snapshot { users }
    }

    /// The users with this externalId, or `None` when the scan did not see it (look it up).
    pub(crate) fn get(&self, external_id: &str) -> Option<Vec<ScimUser>> {
        let found = self.users.get(external_id)?;
        Some(
            found
                .iter()
                .map(|u| ScimUser {
                    id: u.id.to_string(),
                    user_name: None,
                    external_id: Some(external_id.to_owned()),
                    roles: u.roles.to_vec(),
                    meta: Some(Meta {
                        version: u.version.as_deref().map(str::to_owned),
                    }),
                    etag: None,
                })
                .collect(),
        )
    }
}

/// Epoch milliseconds `secs` ago.
fn since(secs: u64) -> i64 {
    let age = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    crate::store::now_ms().saturating_sub(age)
}

/// The part of the job's read (`method`: a scan, or grants) that covers `external_ids`, if it
/// saw them within `sync.snapshot_max_age_secs`; None when there is none, or when the job
/// looks its users up. A store error is logged and read as none: the lookups cost calls, not
/// correctness.
pub(crate) async fn chunk_snapshot(
    deps: &Deps,
    job_id: &str,
    method: ReadMethod,
    external_ids: &[&str],
) -> Option<Snapshot> {
    if method == ReadMethod::Lookup {
        return None;
    }
    let since = since(deps.settings.sync.snapshot_max_age_secs);
    let grants = method == ReadMethod::Grants;
    match deps
        .store
        .scanned(job_id, external_ids, since, grants)
        .await
    {
        Ok(found) if found.is_empty() => None,
        Ok(found) => Some(Snapshot::of(found)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the directory scan; looking the chunk's users up");
            None
        }
    }
}

/// Process-wide read state: the target's page size, the last org size.
#[derive(Default)]
pub(crate) struct Reads {
    page_size: OnceLock<u64>,
    org_size: Mutex<Option<(u64, Instant)>>,
}

impl Reads {
    fn known_org_size(&self) -> Option<u64> {
        let g = self.org_size.lock().ok()?;
        g.filter(|(_, at)| at.elapsed() < ORG_SIZE_TTL)
            .map(|(n, _)| n)
    }

    pub(crate) fn remember_org_size(&self, n: u64) {
        if let Ok(mut g) = self.org_size.lock() {
            *g = Some((n, Instant::now()));
        }
    }

    /// `filter.maxResults`, asked once per process (one call; asked again after a failure).
    async fn page_size(&self, scim: &ScimClient, tally: &CallTally) -> u64 {
        if let Some(n) = self.page_size.get() {
            return *n;
        }
        match scim.max_page_size(tally).await {
            Ok(found) => {
                let n = found
                    .filter(|n| *n > 0)
                    .map_or(DEFAULT_PAGE, |n| n.min(1000));
                let _ = self.page_size.set(n);
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, page = DEFAULT_PAGE, "cannot read ServiceProviderConfig; paging with the default size");
                DEFAULT_PAGE
            }
        }
    }
}

/// What the planner decided, and what it cost.
pub(crate) struct ReadPlan {
    pub(crate) strategy: ReadMethod,
    /// Read calls the job spends in total: planning (page size, probe, scan) plus the lookups
    /// its chunks will make.
    pub(crate) reads: i64,
    /// Lookups the chunks will make.
    pub(crate) lookups: i64,
    pub(crate) org_users: Option<u64>,
    pub(crate) page_size: Option<u64>,
    pub(crate) scan_pages: Option<u64>,
    /// Calls spent while planning.
    pub(crate) tally: CallTally,
}

fn pages(org: u64, page: u64) -> u64 {
    org.div_ceil(page.max(1)).max(1)
}

/// Chooses lookup, scan or grants for the job's `users` users and, for a scan or grants, reads
/// them into the store. `grants`: the job would be written through the Authorization path
/// (`plan`), the only one a read of grants can serve, as it gives no versions for `If-Match`.
pub(crate) async fn plan_reads(deps: &Deps, job_id: &str, users: u64, grants: bool) -> ReadPlan {
    let tally = CallTally::default();
    let setting = deps.settings.sync.read_strategy;
    let lookup = |tally: CallTally, org: Option<u64>, page: Option<u64>| {
        let (spent, _, _) = tally.snapshot();
        ReadPlan {
            strategy: ReadMethod::Lookup,
            reads: spent + users as i64,
            lookups: users as i64,
            org_users: org,
            page_size: page,
            scan_pages: None,
            tally,
        }
    };
    if users == 0 || setting == ReadStrategy::Lookup {
        return lookup(tally, None, None);
    }
    // One user: a lookup (1 call) can never lose to probe + pages.
    if setting == ReadStrategy::Auto && users <= 1 {
        return lookup(tally, None, None);
    }
    let page = deps.reads.page_size(&deps.scim, &tally).await;
    if setting == ReadStrategy::Auto && grants {
        match read_grants(deps, job_id, users, page, &tally).await {
            GrantsRead::Read {
                absent,
                pages: grant_pages,
            } => {
                let (spent, _, _) = tally.snapshot();
                return ReadPlan {
                    strategy: ReadMethod::Grants,
                    reads: spent + absent,
                    lookups: absent,
                    org_users: deps.reads.known_org_size(),
                    page_size: Some(GRANT_PAGE),
                    scan_pages: Some(grant_pages),
                    tally,
                };
            }
            GrantsRead::NotRead => {}
            // Its placeholders (users holding no role until their grants are saved) would
            // stand for the users in a scan: looked up instead.
            GrantsRead::PartlyKept => {
                return lookup(tally, deps.reads.known_org_size(), Some(page));
            }
        }
    }
    if setting == ReadStrategy::Auto
        && let Some(org) = deps.reads.known_org_size()
        && pages(org, page) > users.saturating_mul(2)
    {
        // The org would have to halve for the scan to win: no need to ask.
        return lookup(tally, Some(org), Some(page));
    }
    // The probe: the first page of the scan, which also tells the org size.
    let first = match deps.scim.list_users(1, page, &tally).await {
        Ok(first) => first,
        Err(e) => {
            tracing::warn!(error = %e, "cannot size the directory; looking users up");
            return lookup(tally, None, Some(page));
        }
    };
    let org = first.total_results;
    deps.reads.remember_org_size(org);
    let total_pages = pages(org, page);
    // The probe is spent either way: the scan costs the pages left, lookups one per user.
    if setting == ReadStrategy::Auto && total_pages > users {
        return lookup(tally, Some(org), Some(page));
    }
    let concurrency = deps.settings.target.max_concurrency.max(1);
    let scanned = scan(deps, job_id, first, page, concurrency, &tally).await;
    let absent = match scanned {
        Ok(()) => deps
            .store
            .unscanned_users(job_id)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match absent {
        Ok(absent) => {
            let (spent, _, _) = tally.snapshot();
            ReadPlan {
                strategy: ReadMethod::Scan,
                reads: spent + absent,
                lookups: absent,
                org_users: Some(org),
                page_size: Some(page),
                scan_pages: Some(total_pages),
                tally,
            }
        }
        Err(e) => {
            // The chunks look users up; if the target is down they pause the job.
            tracing::warn!(error = %e, "directory scan failed; looking users up");
            lookup(tally, Some(org), Some(page))
        }
    }
}

/// Grants listed per call: the most `GET …/divisions/{id}/grants` gives.
const GRANT_PAGE: u64 = 500;
/// Pages of grants a read lists at most (5 000 000 grants): a larger `total` from the target
/// is not followed, and the users are read through SCIM.
const MAX_GRANT_PAGES: u64 = 10_000;

/// What the read of grants came to.
enum GrantsRead {
    /// Read: the lookups left (users whose ids are not known) and the pages read.
    Read { absent: i64, pages: u64 },
    /// Not read (it would not win, or it failed and its partial read was cleared): the job is
    /// left to the SCIM reads.
    NotRead,
    /// It failed and its partial read could not be cleared from the store.
    PartlyKept,
}

/// The read of grants, when it costs fewer calls than SCIM would: the home division's grants,
/// `GRANT_PAGE` a call, for the job's users whose ids are known (`Store::users_with_known_ids`);
/// the others are looked up. Not read when it would not win (counted before any call, then
/// again on the first page's `total`) or when it failed.
async fn read_grants(
    deps: &Deps,
    job_id: &str,
    users: u64,
    page: u64,
    tally: &CallTally,
) -> GrantsRead {
    match try_read_grants(deps, job_id, users, page, tally).await {
        Ok(Some((absent, pages))) => GrantsRead::Read { absent, pages },
        Ok(None) => GrantsRead::NotRead,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the grants; reading through SCIM");
            match deps.store.drop_scan(job_id).await {
                Ok(()) => GrantsRead::NotRead,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot clear the partial read of grants; looking users up");
                    GrantsRead::PartlyKept
                }
            }
        }
    }
}

/// `read_grants` without its fallback: None when the read would not win, an error when it
/// failed (whatever it saved is then the caller's to clear).
async fn try_read_grants(
    deps: &Deps,
    job_id: &str,
    users: u64,
    page: u64,
    tally: &CallTally,
) -> Result<Option<(i64, u64)>, ScanError> {
    let seen_since = since(deps.settings.sync.user_id_max_age_secs);
    let known =
        u64::try_from(deps.store.users_with_known_ids(job_id, seen_since).await?).unwrap_or(0);
    let unknown = users.saturating_sub(known);
    // What SCIM would spend at best: lookups, or a scan of at least the job's users.
    let org = deps.reads.known_org_size().unwrap_or(users).max(users);
    let scim_best = users.min(pages(org, page));
    if known == 0 || 1 + unknown >= scim_best {
        return Ok(None);
    }
    let catalog = deps.scim.authz_catalog(tally).await?;
    let division = catalog.home_division.as_str();
    let (total, first) = deps
        .scim
        .division_grants(division, 1, GRANT_PAGE, tally)
        .await?;
    let grant_pages = total.div_ceil(GRANT_PAGE).max(1);
    if grant_pages > MAX_GRANT_PAGES || grant_pages - 1 + unknown >= scim_best {
        return Ok(None);
    }
    deps.store.snapshot_known_ids(job_id, seen_since).await?;
    // `save_grants` finds users by id among the rows just added (`refresh_statistics`).
    refresh_snapshot_statistics(deps).await;
    deps.store.save_grants(job_id, &first).await?;
    let concurrency = deps.settings.target.max_concurrency.max(1);
    let mut rest = futures::stream::iter(2..=grant_pages)
        .map(|n| deps.scim.division_grants(division, n, GRANT_PAGE, tally))
        .buffer_unordered(concurrency);
    while let Some(res) = rest.next().await {
        let (now_total, grants) = res?;
        // Grants made or taken away during the read shift the pages: one could be
        // missed, and a missed grant would never be taken away. Read through SCIM.
        if now_total != total {
            return Err(ScanError::Shifted);
        }
        deps.store.save_grants(job_id, &grants).await?;
    }
    Ok(Some((
        deps.store.unscanned_users(job_id).await?,
        grant_pages,
    )))
}

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error(transparent)]
    Target(#[from] ScimError),
    #[error("saving the scan: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the listing changed while it was read")]
    Shifted,
}

/// Users held before they are saved: a few multi-row INSERTs' worth.
const SAVE_EVERY: usize = 2_000;

/// Reads every page after `first`, `concurrency` at a time (each call paced and retried by the
/// client), and saves the users the job names in the store as it goes: memory holds a few
/// pages, whatever the org.
async fn scan(
    deps: &Deps,
    job_id: &str,
    first: ListResponse,
    page: u64,
    concurrency: usize,
    tally: &CallTally,
) -> Result<(), ScanError> {
    let total = first.total_results;
    // A target may cap pages below what it advertises: step by what it actually returned.
    let step = match first.resources.len() as u64 {
        0 => page,
        n => n.min(page),
    };
    let mut held: Vec<ScannedUser> = Vec::new();
    // The ids serve a later job's read of grants (`read_grants`), on the Authorization path.
    let remember = deps.settings.target.write_api == WriteApi::Authorization;
    let keep = |held: &mut Vec<ScannedUser>, list: Vec<ScimUser>| {
        held.extend(list.into_iter().filter_map(|u| {
            Some(ScannedUser {
                external_id: u.external_id?,
                user_id: u.id,
                version: u.meta.and_then(|m| m.version),
                roles: u.roles.into_iter().map(|r| r.value).collect(),
            })
        }));
    };
    keep(&mut held, first.resources);
    let starts: Vec<u64> = (1u64..)
        .map(|k| 1 + k * step)
        .take_while(|s| *s <= total)
        .collect();
    let mut pages = futures::stream::iter(starts)
        .map(|start| read_range(&deps.scim, start, step, tally))
        .buffer_unordered(concurrency);
    while let Some(res) = pages.next().await {
        keep(&mut held, res?);
        if held.len() >= SAVE_EVERY {
            deps.store.save_scanned(job_id, &held, remember).await?;
            held.clear();
        }
    }
    deps.store.save_scanned(job_id, &held, remember).await?;
    // The chunks read what the scan saved (`refresh_statistics`).
    refresh_snapshot_statistics(deps).await;
    Ok(())
}

/// Refreshes the store's statistics of the directory snapshot after a read filled it; a
/// failure only costs speed.
async fn refresh_snapshot_statistics(deps: &Deps) {
    if let Err(e) = deps
        .store
        .refresh_statistics(Analyzed::DirectorySnapshot)
        .await
    {
        tracing::warn!(error = %e, "cannot refresh the statistics of the directory snapshot");
    }
}

/// The users at `start..start+len`, in as many calls as the target's page size needs.
async fn read_range(
    scim: &ScimClient,
    start: u64,
    len: u64,
    tally: &CallTally,
) -> Result<Vec<ScimUser>, ScimError> {
    let mut out = Vec::new();
    let mut at = start;
    let end = start + len;
    while at < end {
        let page = scim.list_users(at, end - at, tally).await?;
        let got = page.resources.len() as u64;
        out.extend(page.resources);
        if got == 0 || at + got > page.total_results {
            break;
        }
        at += got;
    }
    Ok(out)
}

/// The users with `external_id`: from the snapshot when it saw them, else one lookup.
pub(crate) async fn find_user(
    deps: &Deps,
    snapshot: Option<&Snapshot>,
    external_id: &str,
    tally: &CallTally,
) -> Result<Vec<ScimUser>, ScimError> {
    if let Some(found) = snapshot.and_then(|s| s.get(external_id)) {
        return Ok(found);
    }
    let found = deps.scim.find_by_external_id(external_id, tally).await?;
    if deps.settings.target.write_api == WriteApi::Authorization {
        // What the target says now of this externalId replaces what was known (`read_grants`).
        let ids: Vec<&str> = found.iter().map(|u| u.id.as_str()).collect();
        if let Err(e) = deps.store.replace_ids(external_id, &ids).await {
            tracing::warn!(error = %e, "cannot record the user's id");
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::pages;

    #[test]
    fn pages_round_up_and_never_reach_zero() {
        assert_eq!(pages(0, 100), 1);
        assert_eq!(pages(200, 100), 2);
        assert_eq!(pages(201, 100), 3);
        assert_eq!(pages(10, 0), 10);
    }
}
