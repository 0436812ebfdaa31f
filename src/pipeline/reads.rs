//! How a job reads the users' current roles, chosen by counting calls.
//!
//! - **lookup**: one `filter=externalId eq "…"` per user: `users` reads.
//! - **scan**: page through the whole directory once (`attributes=id,externalId,roles,
//!   meta.version`, the largest page the target allows): `ceil(org / page)` reads, whatever the
//!   job's size.
//!
//! The planner learns the org size with one call that is also the scan's first page
//! (`startIndex=1&count=page` answers `totalResults` like `count=0` does, and its users are not
//! wasted when the scan wins), then takes the cheaper way. The largest page is
//! `filter.maxResults` of `ServiceProviderConfig`, read once per process (else 25, the Genesys
//! default). A job of one user never probes; neither does a job much smaller than the org when
//! the org size is known from a recent probe.
//!
//! The snapshot lives in the memory of the process that planned the job, keyed by job id, and
//! holds only the job's externalIds. Correctness never depends on it: a chunk run where it is
//! missing (another replica, a restart) or too old looks its users up; a stale version makes the
//! PATCH answer 409/412 and the conflict path re-reads that user. A user absent from the
//! snapshot is looked up before being called `not_found`: the listing omits inactive users, and
//! users created or deleted during the scan shift the pages.
//!
//! **No externalId → id cache.** A cached id would let a worker `GET /users/{id}` instead of
//! filtering by externalId: still one call, so it saves nothing, and it would cost more when
//! wrong (a deleted and re-created user: 404, then the lookup anyway) and hide a duplicate
//! externalId created since (`ambiguous_user` is only visible to the filter). Current roles and
//! versions are never cached across jobs.

use super::Deps;
use crate::configuration::ReadStrategy;
use crate::domain::ReadMethod;
use crate::scim::model::{ListResponse, Meta, RoleRef};
use crate::scim::{CallTally, ScimClient, ScimError, ScimUser};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The page size when the target does not say (`count` default of Genesys).
pub(crate) const DEFAULT_PAGE: u64 = 25;
/// An org size learnt this recently is trusted to skip the probe of a small job.
const ORG_SIZE_TTL: Duration = Duration::from_secs(3600);

/// The users of one job as one directory scan saw them, kept compact: a job of 250 000 users
/// holds its snapshot in tens of MB, since users share a handful of distinct role sets.
pub(crate) struct Snapshot {
    pub(crate) taken_at: Instant,
    /// externalId → every user carrying it (only the job's externalIds are kept).
    users: HashMap<Box<str>, Vec<SnapUser>>,
}

/// What the sync needs of a scanned user.
struct SnapUser {
    id: Box<str>,
    version: Option<Box<str>>,
    /// Shared between the users holding the same roles.
    roles: Arc<[RoleRef]>,
}

/// Gives users with equal role lists one shared copy.
#[derive(Default)]
struct RoleSets(HashMap<Vec<String>, Arc<[RoleRef]>>);

impl RoleSets {
    fn intern(&mut self, roles: Vec<RoleRef>) -> Arc<[RoleRef]> {
        let key: Vec<String> = roles.iter().map(|r| r.value.clone()).collect();
        self.0
            .entry(key)
            .or_insert_with(|| Arc::from(roles))
            .clone()
    }
}

impl Snapshot {
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

/// Process-wide read state: snapshots by job, the target's page size, the last org size.
#[derive(Default)]
pub(crate) struct Reads {
    snapshots: Mutex<HashMap<String, Arc<Snapshot>>>,
    page_size: OnceLock<u64>,
    org_size: Mutex<Option<(u64, Instant)>>,
}

impl Reads {
    pub(crate) fn put(&self, job_id: &str, snapshot: Arc<Snapshot>, max_age: Duration) {
        if let Ok(mut m) = self.snapshots.lock() {
            m.retain(|_, s| s.taken_at.elapsed() <= max_age);
            m.insert(job_id.to_owned(), snapshot);
        }
    }

    /// The job's snapshot if this process holds one younger than `max_age`.
    pub(crate) fn get(&self, job_id: &str, max_age: Duration) -> Option<Arc<Snapshot>> {
        let m = self.snapshots.lock().ok()?;
        m.get(job_id)
            .filter(|s| s.taken_at.elapsed() <= max_age)
            .cloned()
    }

    pub(crate) fn drop_job(&self, job_id: &str) {
        if let Ok(mut m) = self.snapshots.lock() {
            m.remove(job_id);
        }
    }

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
    pub(crate) snapshot: Option<Arc<Snapshot>>,
    /// Calls spent while planning.
    pub(crate) tally: CallTally,
}

fn pages(org: u64, page: u64) -> u64 {
    org.div_ceil(page.max(1)).max(1)
}

/// Chooses lookup or scan for a job of `wanted` users and, for a scan, reads the directory.
pub(crate) async fn plan_reads(deps: &Deps, wanted: &HashSet<String>) -> ReadPlan {
    let users = wanted.len() as u64;
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
            snapshot: None,
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
    match scan(&deps.scim, first, page, wanted, concurrency, &tally).await {
        Ok(snapshot) => {
            let absent = wanted
                .iter()
                .filter(|e| !snapshot.users.contains_key(e.as_str()))
                .count() as i64;
            let (spent, _, _) = tally.snapshot();
            ReadPlan {
                strategy: ReadMethod::Scan,
                reads: spent + absent,
                lookups: absent,
                org_users: Some(org),
                page_size: Some(page),
                scan_pages: Some(total_pages),
                snapshot: Some(Arc::new(snapshot)),
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

/// Reads every page after `first`, `concurrency` at a time (each call paced and retried by the
/// client), keeping the users whose externalId is wanted.
async fn scan(
    scim: &ScimClient,
    first: ListResponse,
    page: u64,
    wanted: &HashSet<String>,
    concurrency: usize,
    tally: &CallTally,
) -> Result<Snapshot, ScimError> {
    let total = first.total_results;
    // A target may cap pages below what it advertises: step by what it actually returned.
    let step = match first.resources.len() as u64 {
        0 => page,
        n => n.min(page),
    };
    let mut users: HashMap<Box<str>, Vec<SnapUser>> = HashMap::new();
    let mut role_sets = RoleSets::default();
    let mut keep = |list: Vec<ScimUser>| {
        for u in list {
            let Some(ext) = u.external_id else {
                continue;
            };
            if !wanted.contains(ext.as_str()) {
                continue;
            }
            let same = users.entry(ext.into_boxed_str()).or_default();
            // Pages shift when users come and go during the scan: a user seen twice is one.
            if same.iter().any(|s| *s.id == *u.id) {
                continue;
            }
            same.push(SnapUser {
                id: u.id.into_boxed_str(),
                version: u.meta.and_then(|m| m.version).map(String::into_boxed_str),
                roles: role_sets.intern(u.roles),
            });
        }
    };
    keep(first.resources);
    let starts: Vec<u64> = (1u64..)
        .map(|k| 1 + k * step)
        .take_while(|s| *s <= total)
        .collect();
    let mut pages = futures::stream::iter(starts)
        .map(|start| read_range(scim, start, step, tally))
        .buffer_unordered(concurrency);
    while let Some(res) = pages.next().await {
        keep(res?);
    }
    Ok(Snapshot {
        taken_at: Instant::now(),
        users,
    })
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
    deps.scim.find_by_external_id(external_id, tally).await
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
