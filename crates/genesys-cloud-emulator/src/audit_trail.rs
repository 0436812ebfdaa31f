//! The org's audit trail of permission changes (README, Audit trail): every accepted role
//! change, whoever makes it, appends one message per role granted or taken away, in the shape
//! of Genesys' `AuditLogMessage`. The query endpoints (`audit_api.rs`) read it.
//!
//! Messages are appended by `writes::Audit::record`, under the changed user's lock, so two
//! changes of one user are kept in the order they took effect. The trail keeps the newest
//! `MAX_MESSAGES`. What each message holds (service, entity type, action, entity, property
//! changes) is an assumption: Genesys does not document it (README, Audit trail).
//!
//! The decisions (which messages a query selects, in which order, which page) are pure
//! functions of a snapshot of the trail, separate from the HTTP handlers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most messages kept; the oldest are dropped first.
pub const MAX_MESSAGES: usize = 2_000_000;
/// The service a role change is audited under (README, Audit trail: unconfirmed).
pub const SERVICE: &str = "PeoplePermissions";
/// The entity type of a role change (unconfirmed).
pub const ENTITY_TYPE: &str = "Role";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A person a token acts for (an authorization-code token; README, Audit trail): their user id
/// and name, as a message's `user` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    pub name: String,
}

/// Who made a request: the OAuth client of its token and, for a person's token, the person.
#[derive(Debug, Clone)]
pub struct Actor {
    pub client_id: Arc<str>,
    pub person: Option<Arc<Person>>,
}

impl Actor {
    /// A client-credentials token's actor: the client alone.
    pub fn client(client_id: Arc<str>) -> Actor {
        Actor {
            client_id,
            person: None,
        }
    }
}

/// What the emulator writes into a role change's message, and when it can be queried: the
/// assumptions `POST /emulator/audits` can change, so that a client's check of them can be
/// refuted in a test (README, Audit trail). Applied when messages are queried and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub entity_type: String,
    pub add_action: String,
    pub remove_action: String,
    /// Milliseconds after its `eventDate` before a message is queryable.
    pub delay_ms: i64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            entity_type: ENTITY_TYPE.to_owned(),
            add_action: Action::MemberAdd.as_str().to_owned(),
            remove_action: Action::MemberRemove.as_str().to_owned(),
            delay_ms: 0,
        }
    }
}

impl Shape {
    /// The action name written for `a`.
    pub fn action(&self, a: Action) -> &str {
        match a {
            Action::MemberAdd => &self.add_action,
            Action::MemberRemove => &self.remove_action,
        }
    }
}

/// What happened to the role's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    MemberAdd,
    MemberRemove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::MemberAdd => "MemberAdd",
            Action::MemberRemove => "MemberRemove",
        }
    }
}

/// One audited change: one role granted to, or taken from, one user.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    /// When it happened (Unix milliseconds; `POST /emulator/audits/backdate` moves it).
    pub event_ms: i64,
    /// The OAuth client of the request's token, and the person it acts for, if any.
    pub actor: Actor,
    /// Which call made it (`writes::Via`, snake case), kept in `context.via`.
    pub via: &'static str,
    pub action: Action,
    /// The user whose roles changed.
    pub subject_id: Arc<str>,
    pub role_name: String,
}

/// The trail: messages in the order they were appended (and so by `event_ms`, unless a
/// backdate moved some).
#[derive(Default)]
pub struct AuditTrail {
    messages: Mutex<Vec<Arc<Message>>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl AuditTrail {
    /// Appends one message per role in `after` but not `before` (`MemberAdd`) and per role in
    /// `before` but not `after` (`MemberRemove`).
    pub fn record(
        &self,
        actor: &Actor,
        via: &'static str,
        subject_id: &Arc<str>,
        before: &BTreeSet<String>,
        after: &BTreeSet<String>,
    ) {
        let event_ms = now_ms();
        let make = |action, role: &String| {
            Arc::new(Message {
                id: crate::errors::new_uuid(),
                event_ms,
                actor: actor.clone(),
                via,
                action,
                subject_id: subject_id.clone(),
                role_name: role.clone(),
            })
        };
        let new: Vec<Arc<Message>> = after
            .difference(before)
            .map(|r| make(Action::MemberAdd, r))
            .chain(
                before
                    .difference(after)
                    .map(|r| make(Action::MemberRemove, r)),
            )
            .collect();
        if new.is_empty() {
            return;
        }
        let mut messages = lock(&self.messages);
        let over = (messages.len() + new.len()).saturating_sub(MAX_MESSAGES);
        if over > 0 {
            let n = over.min(messages.len());
            messages.drain(..n);
        }
        messages.extend(new);
    }

    /// Every message kept, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<Message>> {
        lock(&self.messages).clone()
    }

    /// Moves every message kept `secs` seconds into the past; answers how many moved.
    pub fn backdate(&self, secs: i64) -> usize {
        let mut messages = lock(&self.messages);
        for m in messages.iter_mut() {
            let mut moved = (**m).clone();
            moved.event_ms = moved.event_ms.saturating_sub(secs.saturating_mul(1000));
            *m = Arc::new(moved);
        }
        messages.len()
    }

    pub fn clear(&self) {
        lock(&self.messages).clear();
    }

    pub fn len(&self) -> usize {
        lock(&self.messages).len()
    }
}

/// A filter property of `AuditQueryFilter` (the SDK's enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    UserId,
    TrusteeOrganizationId,
    ClientId,
    Action,
    EntityType,
    EntityId,
}

impl Property {
    pub fn parse(s: &str) -> Option<Property> {
        [
            ("UserId", Property::UserId),
            ("TrusteeOrganizationId", Property::TrusteeOrganizationId),
            ("ClientId", Property::ClientId),
            ("Action", Property::Action),
            ("EntityType", Property::EntityType),
            ("EntityId", Property::EntityId),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, p)| p)
    }
}

/// A query, checked: the interval `[start_ms, end_ms)`, the service, the filters (all must
/// match) and the order.
#[derive(Debug, Clone)]
pub struct Query {
    pub start_ms: i64,
    pub end_ms: i64,
    pub service: Option<String>,
    pub filters: Vec<(Property, String)>,
    pub descending: bool,
}

/// What a filter compares: the message's value of `p` as `shape` writes it (role ids come from
/// the catalog).
fn matches(
    m: &Message,
    p: Property,
    value: &str,
    role_id: &dyn Fn(&str) -> String,
    shape: &Shape,
) -> bool {
    match p {
        // The person who made the change: client-credentials changes have none.
        Property::UserId => m.actor.person.as_ref().is_some_and(|u| u.id == value),
        // One org: the emulator has no trustee organisations.
        Property::TrusteeOrganizationId => false,
        Property::ClientId => *m.actor.client_id == *value,
        Property::Action => shape.action(m.action).eq_ignore_ascii_case(value),
        Property::EntityType => shape.entity_type.eq_ignore_ascii_case(value),
        Property::EntityId => role_id(&m.role_name) == value,
    }
}

/// The messages `q` selects at `now_ms`, in its order (ties keep the order of the trail): those
/// of its interval already queryable (`shape.delay_ms` after their date) that match every
/// filter.
pub fn select(
    messages: &[Arc<Message>],
    q: &Query,
    role_id: &dyn Fn(&str) -> String,
    shape: &Shape,
    now_ms: i64,
) -> Vec<Arc<Message>> {
    let service_ok = q
        .service
        .as_deref()
        .is_none_or(|s| s.eq_ignore_ascii_case(SERVICE));
    if !service_ok {
        return Vec::new();
    }
    let mut out: Vec<Arc<Message>> = messages
        .iter()
        .filter(|m| m.event_ms >= q.start_ms && m.event_ms < q.end_ms)
        .filter(|m| m.event_ms.saturating_add(shape.delay_ms) <= now_ms)
        .filter(|m| {
            q.filters
                .iter()
                .all(|(p, v)| matches(m, *p, v, role_id, shape))
        })
        .cloned()
        .collect();
    out.sort_by_key(|m| m.event_ms);
    if q.descending {
        out.reverse();
    }
    out
}

/// Milliseconds as ISO 8601 in UTC with milliseconds (`2026-12-06T23:17:56.123Z`).
pub fn iso(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// An ISO 8601 date-time with an offset (`Z` or `+01:00`), as Unix milliseconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A message as Genesys' `AuditLogMessage`, written as `shape` says. A person's change names
/// them in `user` beside the client (README, Audit trail).
pub fn view(m: &Message, role_id: &str, org_id: &str, division_id: &str, shape: &Shape) -> Value {
    let (verb, change) = match m.action {
        Action::MemberAdd => (
            "granted to",
            json!({"property": "userIds", "oldValues": [], "newValues": [&*m.subject_id]}),
        ),
        Action::MemberRemove => (
            "removed from",
            json!({"property": "userIds", "oldValues": [&*m.subject_id], "newValues": []}),
        ),
    };
    let action = shape.action(m.action);
    let client = &m.actor.client_id;
    let mut v = json!({
        "id": m.id,
        "userHomeOrgId": org_id,
        "client": {"id": &**client, "selfUri": format!("/api/v2/oauth/clients/{client}")},
        "remoteIp": ["127.0.0.1"],
        "serviceName": SERVICE,
        "level": "USER",
        "eventDate": iso(m.event_ms),
        "message": {
            "localizableMessageCode": format!("role.{action}"),
            "message": format!("Role {} {verb} user {}", m.role_name, m.subject_id),
            "messageWithParams": format!("Role {{roleName}} {verb} user {{userId}}"),
            "messageParams": {"roleName": m.role_name, "userId": &*m.subject_id},
        },
        "action": action,
        "entity": {"id": role_id, "name": m.role_name, "selfUri": format!("/api/v2/authorization/roles/{role_id}")},
        "entityType": shape.entity_type,
        "status": "SUCCESS",
        "transactionInitiator": true,
        "propertyChanges": [change],
        "context": {"userId": &*m.subject_id, "divisionId": division_id, "via": m.via},
    });
    if let Some(p) = &m.actor.person {
        v["user"] =
            json!({"id": p.id, "name": p.name, "selfUri": format!("/api/v2/users/{}", p.id)});
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn roles(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_change_is_one_message_per_role_added_or_removed() {
        let trail = AuditTrail::default();
        let (c, u) = (Actor::client(Arc::from("cli")), Arc::from("u1"));
        trail.record(
            &c,
            "scim_patch",
            &u,
            &roles(&["A", "E"]),
            &roles(&["A", "E"]),
        );
        assert_eq!(trail.len(), 0);
        trail.record(
            &c,
            "scim_patch",
            &u,
            &roles(&["A", "E"]),
            &roles(&["B", "C", "E"]),
        );
        let all = trail.snapshot();
        let got: Vec<(Action, &str)> = all
            .iter()
            .map(|m| (m.action, m.role_name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Action::MemberAdd, "B"),
                (Action::MemberAdd, "C"),
                (Action::MemberRemove, "A")
            ]
        );
    }

    #[test]
    fn select_filters_by_interval_property_and_orders() {
        let trail = AuditTrail::default();
        let u: Arc<str> = Arc::from("u1");
        let person = Arc::new(Person {
            id: "p1".into(),
            name: "Ada Admin".into(),
        });
        trail.record(
            &Actor {
                client_id: Arc::from("a"),
                person: Some(person),
            },
            "scim_patch",
            &u,
            &roles(&[]),
            &roles(&["X"]),
        );
        trail.record(
            &Actor::client(Arc::from("b")),
            "bulk_remove",
            &u,
            &roles(&["X"]),
            &roles(&[]),
        );
        let all = trail.snapshot();
        let rid = |n: &str| format!("id-{n}");
        let q = |filters: Vec<(Property, String)>, descending| Query {
            start_ms: 0,
            end_ms: i64::MAX,
            service: Some("peoplepermissions".into()),
            filters,
            descending,
        };
        let shape = Shape::default();
        let now = now_ms();
        let sel = |q: &Query| select(&all, q, &rid, &shape, now);
        assert_eq!(sel(&q(vec![], false)).len(), 2);
        let by_b = sel(&q(vec![(Property::ClientId, "b".into())], false));
        assert_eq!(by_b.len(), 1);
        assert_eq!(by_b[0].action, Action::MemberRemove);
        let by_role = q(
            vec![
                (Property::EntityId, "id-X".into()),
                (Property::Action, "memberadd".into()),
            ],
            false,
        );
        assert_eq!(sel(&by_role).len(), 1);
        let by_person = sel(&q(vec![(Property::UserId, "p1".into())], false));
        assert_eq!(by_person.len(), 1);
        assert_eq!(by_person[0].action, Action::MemberAdd);
        let other = Query {
            service: Some("Directory".into()),
            ..q(vec![], false)
        };
        assert!(sel(&other).is_empty());
        let none = Query {
            start_ms: i64::MAX - 1,
            ..q(vec![], false)
        };
        assert!(sel(&none).is_empty());
        assert_eq!(trail.backdate(10), 2);
        assert!(trail.snapshot()[0].event_ms < all[0].event_ms);
    }

    #[test]
    fn the_shape_renames_what_is_written_and_delays_what_is_queryable() {
        let trail = AuditTrail::default();
        let u: Arc<str> = Arc::from("u1");
        let person = Some(Arc::new(Person {
            id: "p1".into(),
            name: "Ada Admin".into(),
        }));
        let actor = Actor {
            client_id: Arc::from("tool"),
            person,
        };
        trail.record(&actor, "scim_patch", &u, &roles(&[]), &roles(&["X"]));
        let all = trail.snapshot();
        let rid = |n: &str| format!("id-{n}");
        let shape = Shape {
            entity_type: "User".into(),
            add_action: "RoleAssigned".into(),
            delay_ms: 5_000,
            ..Shape::default()
        };
        let q = |filters| Query {
            start_ms: 0,
            end_ms: i64::MAX,
            service: None,
            filters,
            descending: false,
        };
        let at = all[0].event_ms;
        assert!(select(&all, &q(vec![]), &rid, &shape, at + 4_999).is_empty());
        assert_eq!(select(&all, &q(vec![]), &rid, &shape, at + 5_000).len(), 1);
        let typed = vec![(Property::EntityType, "role".to_owned())];
        assert!(select(&all, &q(typed), &rid, &shape, at + 5_000).is_empty());
        let v = view(&all[0], "rid", "org", "home", &shape);
        assert_eq!(
            (v["entityType"].as_str(), v["action"].as_str()),
            (Some("User"), Some("RoleAssigned"))
        );
        assert_eq!(v["user"]["id"], "p1");
        assert_eq!(v["user"]["name"], "Ada Admin");
        assert_eq!(v["client"]["id"], "tool");
        let plain = view(&all[0], "rid", "org", "home", &Shape::default());
        assert_eq!(plain["action"], "MemberAdd");
        assert_eq!(plain["entityType"], "Role");
    }

    #[test]
    fn dates_round_trip_in_iso_8601() {
        assert_eq!(iso(1_733_500_000_123), "2024-12-06T15:46:40.123Z");
        assert_eq!(
            parse_iso("2024-12-06T15:46:40.123Z"),
            Some(1_733_500_000_123)
        );
        assert_eq!(
            parse_iso("2024-12-06T16:46:40+01:00"),
            Some(1_733_500_000_000)
        );
        assert_eq!(parse_iso("yesterday"), None);
    }
}
