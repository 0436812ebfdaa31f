//! The drift feed's pure decisions: what an audit message says (a role change by someone
//! other than rolesync, to which users, by whom, when), the latest change of each user, and
//! which query covers an interval. No call, no store, no clock.
//!
//! What a role change's message holds is not documented by Genesys (README, Drift): a message
//! counts as a role change when its `entityType` is `Role` (or absent) and its `action` is one of
//! `ACTIONS`; the users it names are taken from `context.userId`/`context.subjectId` and from
//! the values of `propertyChanges` whose property names users (`userIds`, `members`, …).
//! Whatever else it names is ignored, and every value is bounded.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Actions that change a role's members (unconfirmed: README, Drift).
const ACTIONS: [&str; 4] = ["MemberAdd", "MemberRemove", "Add", "Remove"];
/// Most users one message may name; more are ignored (a bulk change names many).
const MAX_SUBJECTS: usize = 1_000;
/// The realtime query's reach (AuditApi: 14 days), less a margin for clocks.
pub(crate) const REALTIME_REACH_MS: i64 = 14 * 86_400_000 - 3_600_000;

/// Who made a change: a person (`user`) or an OAuth client (`client`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedBy {
    pub kind: ChangerKind,
    pub id: String,
    /// The name, when the message gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Whether a person or a client made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangerKind {
    User,
    Client,
}

/// One role change of one user, by someone other than rolesync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub message_id: String,
    pub user_id: String,
    pub changed_at_ms: i64,
    /// As the message gives it (ISO 8601).
    pub changed_at: String,
    pub by: ChangedBy,
}

/// What one audit message is to the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A role change by someone else, naming these users.
    Foreign(Vec<Change>),
    /// A role change made by rolesync's own client: never drift.
    Own,
    /// Not a role change (another entity type or action, a failure, or unreadable).
    Other,
}

/// A short identifier: 1 to 128 of `[A-Za-z0-9._@-]`.
fn id_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

fn text<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}

/// A bounded copy of a name (at most 256 characters).
fn bounded(s: &str) -> String {
    s.chars().take(256).collect()
}

/// Which way a member action changes a role's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Add,
    Remove,
}

/// What rolesync reads `action` as: a member added (`MemberAdd`, `Add`), removed
/// (`MemberRemove`, `Remove`), or not a change of a role's members (README, Drift).
pub fn member_change(action: &str) -> Option<MemberChange> {
    ACTIONS
        .iter()
        .position(|a| a.eq_ignore_ascii_case(action))
        .map(|i| {
            if i % 2 == 0 {
                MemberChange::Add
            } else {
                MemberChange::Remove
            }
        })
}

/// Whether a message's `entityType` is a role's (absent counts as one).
pub fn is_role_entity(m: &Value) -> bool {
    text(m, "/entityType").is_none_or(|t| t.eq_ignore_ascii_case("Role"))
}

/// Whether the message names `own_client` as the client and no person: a change rolesync made
/// (it acts through client credentials only).
pub fn made_by_own_client(m: &Value, own_client: &str) -> bool {
    let client = text(m, "/client/id").filter(|s| !s.is_empty());
    let user = text(m, "/user/id").filter(|s| id_like(s));
    client == Some(own_client) && user.is_none()
}

/// The users a message names, as the feed reads them.
pub fn subjects(m: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in ["/context/userId", "/context/subjectId"] {
        if let Some(id) = text(m, key).filter(|s| id_like(s)) {
            out.push(id.to_owned());
        }
    }
    for change in m
        .get("propertyChanges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(64)
    {
        let property = change
            .get("property")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if !(property.contains("user")
            || property.contains("member")
            || property.contains("subject"))
        {
            continue;
        }
        for side in ["oldValues", "newValues"] {
            for v in change
                .get(side)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(MAX_SUBJECTS)
            {
                if let Some(id) = v.as_str().filter(|s| id_like(s)) {
                    out.push(id.to_owned());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_SUBJECTS);
    out
}

/// Parses an ISO 8601 date-time to epoch milliseconds.
fn parse_date(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// What message `m` is to the feed of the client `own_client`.
pub fn parse(m: &Value, own_client: &str) -> Parsed {
    let action = text(m, "/action").unwrap_or("");
    let failed = text(m, "/status").is_some_and(|s| s.eq_ignore_ascii_case("FAILURE"));
    if !is_role_entity(m) || member_change(action).is_none() || failed {
        return Parsed::Other;
    }
    let client = text(m, "/client/id").filter(|s| !s.is_empty());
    let user = text(m, "/user/id").filter(|s| id_like(s));
    // rolesync acts through client credentials only: a change of its client with no person
    // behind it is its own.
    if made_by_own_client(m, own_client) {
        return Parsed::Own;
    }
    let by = match (user, client) {
        (Some(id), _) => ChangedBy {
            kind: ChangerKind::User,
            id: id.to_owned(),
            name: text(m, "/user/name").map(bounded),
        },
        (None, Some(id)) => ChangedBy {
            kind: ChangerKind::Client,
            id: bounded(id),
            name: None,
        },
        (None, None) => return Parsed::Other,
    };
    let Some(changed_at) = text(m, "/eventDate") else {
        return Parsed::Other;
    };
    let Some(changed_at_ms) = parse_date(changed_at) else {
        return Parsed::Other;
    };
    let message_id = text(m, "/id").map(bounded).unwrap_or_default();
    let changes: Vec<Change> = subjects(m)
        .into_iter()
        .map(|user_id| Change {
            message_id: message_id.clone(),
            user_id,
            changed_at_ms,
            changed_at: bounded(changed_at),
            by: by.clone(),
        })
        .collect();
    if changes.is_empty() {
        Parsed::Other
    } else {
        Parsed::Foreign(changes)
    }
}

/// What a batch of messages came to: the latest foreign change of each user named, and how
/// many messages were rolesync's own.
#[derive(Debug, Default)]
pub struct Digest {
    pub latest: BTreeMap<String, Change>,
    pub own: u64,
    pub foreign: u64,
}

impl Digest {
    pub fn add(&mut self, m: &Value, own_client: &str) {
        match parse(m, own_client) {
            Parsed::Own => self.own += 1,
            Parsed::Other => {}
            Parsed::Foreign(changes) => {
                self.foreign += 1;
                for c in changes {
                    match self.latest.get(&c.user_id) {
                        Some(old) if old.changed_at_ms > c.changed_at_ms => {}
                        _ => {
                            self.latest.insert(c.user_id.clone(), c);
                        }
                    }
                }
            }
        }
    }
}

/// Which query covers `[start_ms, end_ms)` at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Nothing to read yet.
    Nothing,
    /// The realtime query (the last 14 days).
    Realtime,
    /// The async query: the start is older than the realtime query reaches.
    Async,
}

pub fn route(start_ms: i64, end_ms: i64, now_ms: i64) -> Route {
    if end_ms <= start_ms {
        Route::Nothing
    } else if start_ms < now_ms - REALTIME_REACH_MS {
        Route::Async
    } else {
        Route::Realtime
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn message(client: &str, user: Option<&str>, subject: &str, at: &str) -> Value {
        let mut m = json!({
            "id": "m1", "serviceName": "PeoplePermissions", "entityType": "Role",
            "action": "MemberAdd", "status": "SUCCESS", "eventDate": at,
            "client": {"id": client},
            "entity": {"id": "r1", "name": "Agent"},
            "propertyChanges": [{"property": "userIds", "oldValues": [], "newValues": [subject]}],
        });
        if let Some(u) = user {
            m["user"] = json!({"id": u, "name": "Ada Admin"});
        }
        m
    }

    #[test]
    fn own_changes_are_told_from_hand_changes() {
        let own = message("rolesync", None, "u1", "2026-01-01T00:00:00Z");
        assert_eq!(parse(&own, "rolesync"), Parsed::Own);
        let by_person = message("rolesync", Some("admin-1"), "u1", "2026-01-01T00:00:00Z");
        let Parsed::Foreign(c) = parse(&by_person, "rolesync") else {
            panic!("a person's change is foreign");
        };
        assert_eq!(c[0].by.kind, ChangerKind::User);
        assert_eq!(c[0].by.name.as_deref(), Some("Ada Admin"));
        let tool = message("admin-tool", None, "u1", "2026-01-01T00:00:00.250Z");
        let Parsed::Foreign(c) = parse(&tool, "rolesync") else {
            panic!("another client's change is foreign");
        };
        assert_eq!(
            (c[0].user_id.as_str(), c[0].by.id.as_str()),
            ("u1", "admin-tool")
        );
        assert_eq!(c[0].changed_at_ms, 1_767_225_600_250);
    }

    #[test]
    fn other_messages_and_bad_values_are_not_changes() {
        let mut m = message("x", None, "u1", "2026-01-01T00:00:00Z");
        m["entityType"] = json!("User");
        assert_eq!(parse(&m, "rolesync"), Parsed::Other);
        let mut m = message("x", None, "u1", "2026-01-01T00:00:00Z");
        m["status"] = json!("FAILURE");
        assert_eq!(parse(&m, "rolesync"), Parsed::Other);
        let m = message("x", None, "u 1; drop", "2026-01-01T00:00:00Z");
        assert_eq!(parse(&m, "rolesync"), Parsed::Other);
        let m = message("x", None, "u1", "last tuesday");
        assert_eq!(parse(&m, "rolesync"), Parsed::Other);
        assert_eq!(parse(&json!("not an object"), "rolesync"), Parsed::Other);
        let mut many = message("x", None, "u1", "2026-01-01T00:00:00Z");
        let ids: Vec<String> = (0..5000).map(|i| format!("u{i}")).collect();
        many["propertyChanges"][0]["newValues"] = json!(ids);
        let Parsed::Foreign(c) = parse(&many, "rolesync") else {
            panic!("a bulk change is foreign");
        };
        assert_eq!(c.len(), MAX_SUBJECTS);
    }

    #[test]
    fn the_digest_keeps_each_users_latest_change() {
        let mut d = Digest::default();
        d.add(&message("a", None, "u1", "2026-01-01T00:00:02Z"), "rs");
        d.add(&message("b", None, "u1", "2026-01-01T00:00:01Z"), "rs");
        d.add(&message("rs", None, "u2", "2026-01-01T00:00:03Z"), "rs");
        assert_eq!((d.foreign, d.own, d.latest.len()), (2, 1, 1));
        assert_eq!(d.latest["u1"].by.id, "a");
    }

    #[test]
    fn member_actions_are_read_both_ways() {
        assert_eq!(member_change("MemberAdd"), Some(MemberChange::Add));
        assert_eq!(member_change("add"), Some(MemberChange::Add));
        assert_eq!(member_change("MemberRemove"), Some(MemberChange::Remove));
        assert_eq!(member_change("Remove"), Some(MemberChange::Remove));
        assert_eq!(member_change("RoleAssigned"), None);
        assert!(is_role_entity(&json!({})));
        assert!(!is_role_entity(&json!({"entityType": "User"})));
    }

    #[test]
    fn old_intervals_take_the_async_query() {
        let now = 100 * 86_400_000;
        assert_eq!(route(now, now, now), Route::Nothing);
        assert_eq!(route(now - 60_000, now, now), Route::Realtime);
        assert_eq!(route(now - 20 * 86_400_000, now, now), Route::Async);
    }
}
