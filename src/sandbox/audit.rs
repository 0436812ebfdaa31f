//! The judgements of the audit-trail assumptions (pure): what the audit messages naming the test
//! user, and the measured delay before the check's last change was queryable, say about what
//! the drift feed takes for granted (README, Drift; emulator README, Audit trail). The messages
//! are read as the feed reads them (`pipeline::drift`), so a confirmed assumption is one the
//! feed's own code relies on. No I/O here.
//!
//! The evidence describes values by what they are (the test role's id, the test user's id,
//! another value) rather than printing them: the report names no id of the org but the test
//! user's externalId.

use super::assumptions::{AssumptionId as A, Finding, Seen, Verdict};
use crate::pipeline::drift::{
    MemberChange, is_role_entity, made_by_own_client, member_change, subjects,
};
use Verdict::{Confirmed, NotTestable, Refuted};
use serde_json::Value;
use std::collections::BTreeMap;

/// The measurement's resolution: while it waits, the check queries the audit trail at most once
/// a second.
pub const RESOLUTION_MS: i64 = 1_000;

/// What the audit probe saw.
#[derive(Debug, Clone)]
pub struct AuditSeen<'a> {
    /// The messages naming the test user that were not there before the check's first write,
    /// oldest first.
    pub messages: &'a [Value],
    /// Role changes the check made to the test user (each should have its message).
    pub changes: usize,
    /// Which way the check's last change went (its first is always a grant).
    pub last: MemberChange,
    pub test_user_id: &'a str,
    pub role_id: &'a str,
    pub role_name: &'a str,
    /// `target.client_id`; None with a bearer token (the client is not known).
    pub own_client: Option<&'a str>,
}

/// How long the check's last change took to be queryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// This host's time when the query that first answered the change's message was sent,
    /// less the message's `eventDate`; None: not answered within the wait.
    pub found_after_ms: Option<i64>,
    /// How long the check waited for it.
    pub waited_ms: i64,
    /// `drift.lag_secs`.
    pub lag_secs: u64,
}

fn text<'a>(m: &'a Value, path: &str) -> Option<&'a str> {
    m.pointer(path).and_then(Value::as_str)
}

/// `n×` counts of `key(m)` over `messages`, for the evidence: `Role/MemberAdd ×2, …`.
fn counts(messages: &[Value], key: impl Fn(&Value) -> String) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for m in messages {
        *by.entry(key(m)).or_default() += 1;
    }
    by.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shape(m: &Value) -> String {
    format!(
        "{}/{}",
        text(m, "/entityType").unwrap_or("(no entityType)"),
        text(m, "/action").unwrap_or("(no action)")
    )
}

/// The messages the feed would take for role changes by their action (whatever their entity
/// type), or all of them when none is.
fn role_changes<'a>(s: &AuditSeen<'a>) -> Vec<&'a Value> {
    let by_action: Vec<&Value> = s
        .messages
        .iter()
        .filter(|m| text(m, "/action").and_then(member_change).is_some())
        .collect();
    if by_action.is_empty() {
        s.messages.iter().collect()
    } else {
        by_action
    }
}

fn none_seen(id: A) -> Finding {
    Finding::new(
        id,
        NotTestable,
        "no audit message naming the test user was queryable",
    )
}

/// The realtime query's first answer.
pub fn permitted(first: &Seen) -> Finding {
    let evidence = format!("POST /api/v2/audits/query/realtime: {}", first.summary());
    let verdict = match first.status {
        s if (200..300).contains(&s) => Confirmed,
        403 => Refuted,
        _ => NotTestable,
    };
    let evidence = if verdict == Refuted {
        format!("{evidence}: give the OAuth client's role audits:audit:view")
    } else {
        evidence
    };
    Finding::new(A::AuditViewPermitted, verdict, evidence)
}

/// Every audit assumption but the permission, not testable for `why`.
pub fn not_testable(why: &str) -> Vec<Finding> {
    [
        A::AuditQueryableWithinLag,
        A::AuditEntityTypeRole,
        A::AuditMemberActions,
        A::AuditEntityIsRole,
        A::AuditNamesUser,
        A::AuditNamesOwnClient,
    ]
    .into_iter()
    .map(|id| Finding::new(id, NotTestable, why))
    .collect()
}

pub fn queryable(d: &Delay) -> Finding {
    let lag_ms = i64::try_from(d.lag_secs).unwrap_or(i64::MAX / 2) * 1000;
    let (verdict, evidence) = match d.found_after_ms {
        Some(ms) => {
            let ms = ms.max(0);
            let needed = ms.div_euclid(1000) + 1;
            let verdict = if ms <= lag_ms + RESOLUTION_MS {
                Confirmed
            } else {
                Refuted
            };
            let advice = if verdict == Refuted {
                format!("; set drift.lag_secs to at least {needed}")
            } else {
                String::new()
            };
            (
                verdict,
                format!(
                    "the check's last role change was queryable {ms} ms after its eventDate (this host's clock; queried at most a second apart); drift.lag_secs = {}{advice}",
                    d.lag_secs
                ),
            )
        }
        None => (
            Refuted,
            format!(
                "the check's last role change was not queryable within {} s (service PeoplePermissions)",
                d.waited_ms / 1000
            ),
        ),
    };
    Finding::new(A::AuditQueryableWithinLag, verdict, evidence)
}

pub fn entity_type(s: &AuditSeen<'_>) -> Finding {
    if s.messages.is_empty() {
        return none_seen(A::AuditEntityTypeRole);
    }
    let roles = s.messages.iter().filter(|m| is_role_entity(m)).count();
    let evidence = format!(
        "{} role changes of the test user; messages naming it: {}",
        s.changes,
        counts(s.messages, shape)
    );
    let verdict = if roles >= s.changes {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::AuditEntityTypeRole, verdict, evidence)
}

pub fn actions(s: &AuditSeen<'_>) -> Finding {
    if s.messages.is_empty() {
        return none_seen(A::AuditMemberActions);
    }
    let read: Vec<MemberChange> = s
        .messages
        .iter()
        .filter_map(|m| text(m, "/action").and_then(member_change))
        .collect();
    let seen: Vec<&str> = s
        .messages
        .iter()
        .map(|m| text(m, "/action").unwrap_or("(none)"))
        .collect();
    let evidence = format!(
        "actions in order: {} (the check granted first and {} last)",
        seen.join(", "),
        match s.last {
            MemberChange::Add => "granted",
            MemberChange::Remove => "removed",
        }
    );
    let both = read.contains(&MemberChange::Add) && read.contains(&MemberChange::Remove);
    let verdict =
        if both && read.first() == Some(&MemberChange::Add) && read.last() == Some(&s.last) {
            Confirmed
        } else {
            Refuted
        };
    Finding::new(A::AuditMemberActions, verdict, evidence)
}

/// What a value is, for the evidence.
fn what(v: Option<&str>, s: &AuditSeen<'_>) -> &'static str {
    match v {
        None => "absent",
        Some(v) if v == s.role_id => "the test role's id",
        Some(v) if v == s.role_name => "the test role's name",
        Some(v) if v == s.test_user_id => "the test user's id",
        Some(v) if v.contains(s.test_user_id) => "a text holding the test user's id",
        Some(_) => "another value",
    }
}

pub fn entity_is_role(s: &AuditSeen<'_>) -> Finding {
    if s.messages.is_empty() {
        return none_seen(A::AuditEntityIsRole);
    }
    let changes = role_changes(s);
    let ok = changes.iter().all(|m| {
        text(m, "/entity/id") == Some(s.role_id) && text(m, "/entity/name") == Some(s.role_name)
    });
    let evidence = format!(
        "entity of {} role-change messages: {}",
        changes.len(),
        counts(
            &changes.iter().map(|m| (*m).clone()).collect::<Vec<_>>(),
            |m| format!(
                "id {}, name {}",
                what(text(m, "/entity/id"), s),
                what(text(m, "/entity/name"), s)
            )
        )
    );
    Finding::new(
        A::AuditEntityIsRole,
        if ok { Confirmed } else { Refuted },
        evidence,
    )
}

pub fn names_user(s: &AuditSeen<'_>) -> Finding {
    if s.messages.is_empty() {
        return none_seen(A::AuditNamesUser);
    }
    let changes = role_changes(s);
    let named = changes
        .iter()
        .filter(|m| subjects(m).iter().any(|u| u == s.test_user_id))
        .count();
    let evidence = format!(
        "{named} of {} role-change messages name the test user where the feed reads it (context.userId: {})",
        changes.len(),
        counts(
            &changes.iter().map(|m| (*m).clone()).collect::<Vec<_>>(),
            |m| what(text(m, "/context/userId"), s).to_owned()
        )
    );
    let verdict = if named == changes.len() {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::AuditNamesUser, verdict, evidence)
}

pub fn names_own_client(s: &AuditSeen<'_>) -> Finding {
    let Some(own) = s.own_client else {
        return Finding::new(
            A::AuditNamesOwnClient,
            NotTestable,
            "no target.client_id (a bearer token): the client rolesync acts as is not known",
        );
    };
    if s.messages.is_empty() {
        return none_seen(A::AuditNamesOwnClient);
    }
    let changes = role_changes(s);
    let own_count = changes
        .iter()
        .filter(|m| made_by_own_client(m, own))
        .count();
    let evidence = format!(
        "{own_count} of {} role-change messages name target.client_id and no user ({})",
        changes.len(),
        counts(
            &changes.iter().map(|m| (*m).clone()).collect::<Vec<_>>(),
            |m| {
                let client = match text(m, "/client/id") {
                    Some(c) if c == own => "client target.client_id",
                    Some(_) => "another client",
                    None => "no client",
                };
                let user = if m.pointer("/user/id").is_some() {
                    "a user"
                } else {
                    "no user"
                };
                format!("{client}, {user}")
            }
        )
    );
    let verdict = if own_count == changes.len() {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::AuditNamesOwnClient, verdict, evidence)
}

/// Every audit finding after the permission, in the order of `AssumptionId::ALL`.
pub fn judge(s: &AuditSeen<'_>, d: &Delay) -> Vec<Finding> {
    vec![
        queryable(d),
        entity_type(s),
        actions(s),
        entity_is_role(s),
        names_user(s),
        names_own_client(s),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(action: &str, entity_type: &str) -> Value {
        json!({
            "entityType": entity_type, "action": action,
            "client": {"id": "rolesync"},
            "entity": {"id": "role-1", "name": "Agent"},
            "propertyChanges": [{"property": "userIds", "oldValues": [], "newValues": ["u-1"]}],
            "context": {"userId": "u-1"},
        })
    }

    fn seen(messages: &[Value]) -> AuditSeen<'_> {
        AuditSeen {
            messages,
            changes: 4,
            last: MemberChange::Remove,
            test_user_id: "u-1",
            role_id: "role-1",
            role_name: "Agent",
            own_client: Some("rolesync"),
        }
    }

    fn verdicts(s: &AuditSeen<'_>) -> Vec<Verdict> {
        let d = Delay {
            found_after_ms: Some(5),
            waited_ms: 5,
            lag_secs: 0,
        };
        judge(s, &d).into_iter().map(|f| f.verdict).collect()
    }

    fn as_expected() -> Vec<Value> {
        ["MemberAdd", "MemberRemove", "MemberAdd", "MemberRemove"]
            .iter()
            .map(|a| message(a, "Role"))
            .collect()
    }

    #[test]
    fn messages_as_the_feed_reads_them_confirm_every_assumption() {
        let m = as_expected();
        assert_eq!(verdicts(&seen(&m)), vec![Confirmed; 6]);
    }

    #[test]
    fn each_departure_refutes_its_own_assumption() {
        let mut m = as_expected();
        m[1]["entityType"] = json!("User");
        let v = verdicts(&seen(&m));
        assert_eq!(v[1], Refuted, "entity type");
        assert_eq!(v.iter().filter(|v| **v == Refuted).count(), 1);

        let mut m = as_expected();
        m[0]["action"] = json!("RoleAssigned");
        m[2]["action"] = json!("RoleAssigned");
        let v = verdicts(&seen(&m));
        assert_eq!(v[2], Refuted, "actions");
        assert_eq!(v.iter().filter(|v| **v == Refuted).count(), 1);

        // Swapped names: the first change read as a removal.
        let m: Vec<Value> = ["MemberRemove", "MemberAdd", "MemberRemove", "MemberAdd"]
            .iter()
            .map(|a| message(a, "Role"))
            .collect();
        assert_eq!(verdicts(&seen(&m))[2], Refuted);

        let mut m = as_expected();
        m[3]["entity"] = json!({"id": "u-1", "name": "u-1 role-1 org"});
        let v = verdicts(&seen(&m));
        assert_eq!(v[3], Refuted, "entity");

        let mut m = as_expected();
        for x in &mut m {
            x["context"] = json!({});
            x["propertyChanges"] = json!([]);
            x["entity"]["name"] = json!("u-1/role-1");
        }
        let f = names_user(&seen(&m));
        assert_eq!(f.verdict, Refuted);
        assert!(f.evidence.starts_with("0 of 4"), "{}", f.evidence);

        let mut m = as_expected();
        m[0]["user"] = json!({"id": "someone"});
        assert_eq!(names_own_client(&seen(&m)).verdict, Refuted);
        m[0]["client"] = json!({"id": "another"});
        let f = names_own_client(&seen(&m));
        assert!(
            f.evidence.contains("another client, a user"),
            "{}",
            f.evidence
        );
    }

    #[test]
    fn nothing_seen_is_not_testable_and_no_client_id_is_not_testable() {
        let v = verdicts(&seen(&[]));
        assert_eq!(&v[1..], &[NotTestable; 5]);
        let m = as_expected();
        let mut s = seen(&m);
        s.own_client = None;
        assert_eq!(names_own_client(&s).verdict, NotTestable);
    }

    #[test]
    fn the_delay_is_judged_against_the_lag_to_the_second() {
        let d = |found, lag_secs| Delay {
            found_after_ms: found,
            waited_ms: 60_000,
            lag_secs,
        };
        assert_eq!(queryable(&d(Some(40), 0)).verdict, Confirmed);
        assert_eq!(queryable(&d(Some(1_000), 0)).verdict, Confirmed);
        let late = queryable(&d(Some(3_400), 0));
        assert_eq!(late.verdict, Refuted);
        assert!(late.evidence.contains("at least 4"), "{}", late.evidence);
        assert_eq!(queryable(&d(Some(3_400), 5)).verdict, Confirmed);
        let never = queryable(&d(None, 5));
        assert_eq!(never.verdict, Refuted);
        assert!(never.evidence.contains("within 60 s"));
    }

    #[test]
    fn a_refused_query_refutes_the_permission_only() {
        let s = |status| Seen {
            status,
            body: json!({"code": "missing.permissions"}),
            ..Default::default()
        };
        assert_eq!(permitted(&s(200)).verdict, Confirmed);
        assert_eq!(permitted(&s(403)).verdict, Refuted);
        assert_eq!(permitted(&s(503)).verdict, NotTestable);
        assert!(
            not_testable("x")
                .iter()
                .all(|f| f.verdict == NotTestable && f.evidence == "x")
        );
    }
}
