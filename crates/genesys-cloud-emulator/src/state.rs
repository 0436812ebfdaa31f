//! The org's users, sharded so requests do not serialise on one lock.
//!
//! - `users`: `SHARDS` × `RwLock<HashMap<id, User>>`, keyed by id.
//! - `by_external_id`: sharded `externalId → [id]` (several users may share an externalId).
//! - `by_user_name`: sharded `lowercase(userName) → id` (userName is unique, case-insensitively,
//!   among users that are not deleted).
//! - `order`: every id ever created, in creation order (paging order); the active-user listing
//!   used by unfiltered `GET /users` is a cached snapshot rebuilt only after a create, a delete
//!   or a change of `active`.
//!
//! Lock order: a user shard may be held while an index shard or the write log's mutex
//! (`writes.rs`) is taken, never the reverse.
//! Deleted users stay in their shard with `deleted = true` (soft delete) and leave the indexes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::http::StatusCode;

use crate::errors::{ApiError, VERSION_MISMATCH};
use crate::user::{User, UserData};
use crate::writes::Audit;

const SHARDS: usize = 64;

pub type Id = Arc<str>;

pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap and good enough to spread ids and names over the shards.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h as usize) % SHARDS
}

fn shards<T: Default>() -> Box<[RwLock<T>]> {
    (0..SHARDS).map(|_| RwLock::new(T::default())).collect()
}

/// A precondition from `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Versions(Vec<u64>),
}

impl IfMatch {
    /// Parses `*`, `"3"`, `W/"3"`, or a comma-separated list of them. Unparseable tags match
    /// nothing (they are stale by definition).
    pub fn parse(header: &str) -> IfMatch {
        if header.trim() == "*" {
            return IfMatch::Any;
        }
        IfMatch::Versions(
            header
                .split(',')
                .filter_map(|t| {
                    let t = t.trim();
                    let t = t.strip_prefix("W/").unwrap_or(t);
                    t.trim_matches('"').parse::<u64>().ok()
                })
                .collect(),
        )
    }

    pub fn matches(&self, version: u64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Versions(v) => v.contains(&version),
        }
    }
}

/// What a stale `If-Match` answers: 409 (Genesys) or 412 (RFC 7644).
#[derive(Debug, Clone, Copy)]
pub struct Conflict(pub StatusCode);

impl Conflict {
    fn error(self) -> ApiError {
        ApiError::scim(self.0, None, VERSION_MISMATCH)
    }
}

pub struct Outcome {
    pub user: User,
}

type Shard<K, V> = RwLock<HashMap<K, V>>;
/// (generation, [active users, all users]).
type ListingCache = (u64, [Option<Arc<Vec<Id>>>; 2]);

#[derive(Default)]
pub struct Directory {
    users: Box<[Shard<Id, User>]>,
    by_external_id: Box<[Shard<String, Vec<Id>>]>,
    by_user_name: Box<[Shard<String, Id>]>,
    order: RwLock<Vec<Id>>,
    /// The generation changes on every invalidation.
    listing: Mutex<ListingCache>,
    seq: AtomicU64,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Directory {
    pub fn new() -> Directory {
        Directory {
            users: shards(),
            by_external_id: shards(),
            by_user_name: shards(),
            ..Directory::default()
        }
    }

    fn user_shard(&self, id: &str) -> &Shard<Id, User> {
        &self.users[shard_of(id)]
    }

    fn invalidate_listing(&self) {
        let mut cache = lock(&self.listing);
        cache.0 += 1;
        cache.1 = [None, None];
    }

    /// Runs `f` on a live user without cloning it.
    pub fn with_user<R>(&self, id: &str, f: impl FnOnce(&User) -> R) -> Option<R> {
        let shard = read(self.user_shard(id));
        shard.get(id).filter(|u| !u.deleted).map(f)
    }

    pub fn get(&self, id: &str) -> Option<User> {
        self.with_user(id, Clone::clone)
    }

    pub fn ids_by_external_id(&self, external_id: &str) -> Vec<Id> {
        read(&self.by_external_id[shard_of(external_id)])
            .get(external_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn id_by_user_name(&self, user_name: &str) -> Option<Id> {
        let key = user_name.to_lowercase();
        read(&self.by_user_name[shard_of(&key)]).get(&key).cloned()
    }

    /// Ids of live users in creation order for which `pred` holds (a full scan).
    pub fn scan(&self, mut pred: impl FnMut(&User) -> bool) -> Vec<Id> {
        let order = read(&self.order).clone();
        order
            .into_iter()
            .filter(|id| self.with_user(id, &mut pred).unwrap_or(false))
            .collect()
    }

    /// The users `GET /users` lists without a filter, in creation order: active users only
    /// (Genesys: "If nothing is specified, returns all active users"), or every user.
    /// Cached until a create, a delete or a change of `active`.
    pub fn listing(&self, include_inactive: bool) -> Arc<Vec<Id>> {
        let slot = usize::from(include_inactive);
        let generation = {
            let cache = lock(&self.listing);
            if let Some(listing) = cache.1[slot].as_ref() {
                return listing.clone();
            }
            cache.0
        };
        let listing = Arc::new(self.scan(|u| include_inactive || u.data.active));
        let mut cache = lock(&self.listing);
        // Store it only if nothing changed the membership during the scan.
        if cache.0 == generation {
            cache.1[slot] = Some(listing.clone());
        }
        listing
    }

    fn claim_user_name(&self, name: &str, id: &Id) -> Result<(), ApiError> {
        let key = name.to_lowercase();
        let mut index = write(&self.by_user_name[shard_of(&key)]);
        match index.get(&key) {
            Some(existing) if existing != id => Err(ApiError::uniqueness(
                "User name already in use by non-deleted user.",
            )),
            _ => {
                index.insert(key, id.clone());
                Ok(())
            }
        }
    }

    fn release_user_name(&self, name: &str, id: &Id) {
        let key = name.to_lowercase();
        let mut index = write(&self.by_user_name[shard_of(&key)]);
        if index.get(&key) == Some(id) {
            index.remove(&key);
        }
    }

    fn index_external_id(&self, external_id: &str, id: &Id) {
        let mut index = write(&self.by_external_id[shard_of(external_id)]);
        let ids = index.entry(external_id.to_string()).or_default();
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }

    fn unindex_external_id(&self, external_id: &str, id: &Id) {
        let mut index = write(&self.by_external_id[shard_of(external_id)]);
        if let Some(ids) = index.get_mut(external_id) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                index.remove(external_id);
            }
        }
    }

    /// Creates a user (version 1). 409 `uniqueness` when the userName is taken. With `audit`,
    /// the new user's roles are logged (from none), under the user's shard lock.
    pub fn create(&self, data: UserData, audit: Option<&Audit<'_>>) -> Result<User, ApiError> {
        let id: Id = Arc::from(crate::errors::new_uuid());
        self.claim_user_name(&data.user_name, &id)?;
        let now = now_rfc3339();
        let user = User {
            id: id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            data,
            version: 1,
            created: now.clone(),
            last_modified: now,
            deleted: false,
        };
        {
            let mut shard = write(self.user_shard(&id));
            if let Some(ext) = &user.data.external_id {
                self.index_external_id(ext, &id);
            }
            if let Some(audit) = audit {
                let none = std::collections::BTreeSet::new();
                let ext = user.data.external_id.as_deref();
                audit.record(&id, ext, &none, &user.data.roles);
            }
            shard.insert(id.clone(), user.clone());
            write(&self.order).push(id);
        }
        self.invalidate_listing();
        Ok(user)
    }

    /// Changes a user under its shard lock: checks `If-Match`, computes the new content with
    /// `f`, and bumps the version only when the content changed. With `audit`, a change of
    /// the roles is logged under the same lock, once nothing can refuse the write any more.
    pub fn update(
        &self,
        id: &str,
        if_match: Option<&IfMatch>,
        conflict: Conflict,
        audit: Option<&Audit<'_>>,
        f: impl FnOnce(&User) -> Result<UserData, ApiError>,
    ) -> Result<Outcome, ApiError> {
        let mut shard = write(self.user_shard(id));
        let Some(user) = shard.get_mut(id).filter(|u| !u.deleted) else {
            return Err(not_found(id));
        };
        if let Some(pre) = if_match
            && !pre.matches(user.version)
        {
            return Err(conflict.error());
        }
        let data = f(user)?;
        if data == user.data {
            return Ok(Outcome { user: user.clone() });
        }
        let uid = user.id.clone();
        if data.user_name.to_lowercase() != user.data.user_name.to_lowercase() {
            self.claim_user_name(&data.user_name, &uid)?;
            self.release_user_name(&user.data.user_name, &uid);
        }
        if data.external_id != user.data.external_id {
            if let Some(old) = &user.data.external_id {
                self.unindex_external_id(old, &uid);
            }
            if let Some(new) = &data.external_id {
                self.index_external_id(new, &uid);
            }
        }
        if let Some(audit) = audit {
            let ext = data.external_id.as_deref();
            audit.record(&uid, ext, &user.data.roles, &data.roles);
        }
        let active_changed = data.active != user.data.active;
        user.data = data;
        user.version += 1;
        user.last_modified = now_rfc3339();
        let out = user.clone();
        drop(shard);
        if active_changed {
            self.invalidate_listing();
        }
        Ok(Outcome { user: out })
    }

    /// Soft-deletes a user: it answers 404 afterwards and its userName is free again.
    pub fn delete(
        &self,
        id: &str,
        if_match: Option<&IfMatch>,
        conflict: Conflict,
    ) -> Result<(), ApiError> {
        let mut shard = write(self.user_shard(id));
        let Some(user) = shard.get_mut(id).filter(|u| !u.deleted) else {
            return Err(not_found(id));
        };
        if let Some(pre) = if_match
            && !pre.matches(user.version)
        {
            return Err(conflict.error());
        }
        user.deleted = true;
        user.version += 1;
        user.last_modified = now_rfc3339();
        let uid = user.id.clone();
        self.release_user_name(&user.data.user_name, &uid);
        if let Some(ext) = &user.data.external_id {
            self.unindex_external_id(ext, &uid);
        }
        drop(shard);
        self.invalidate_listing();
        Ok(())
    }

    /// Every live user, in creation order.
    pub fn dump(&self) -> Vec<User> {
        let order = read(&self.order).clone();
        order.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Removes every user (`POST /emulator/reset`).
    pub fn clear(&self) {
        for s in self.users.iter() {
            write(s).clear();
        }
        for s in self.by_external_id.iter() {
            write(s).clear();
        }
        for s in self.by_user_name.iter() {
            write(s).clear();
        }
        write(&self.order).clear();
        self.invalidate_listing();
    }
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::scim_not_found(format!("Resource {id} not found"))
}
