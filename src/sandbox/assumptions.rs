//! The assumptions `sandbox-check` tests, what each claims and where the claim comes from, and
//! the pure judgements: each takes what the calls answered (`Seen`) and says confirmed, refuted
//! or not testable, with the evidence. No I/O here.

use serde::Serialize;
use serde_json::Value;

/// Every assumption, in the order of the report (a stable schema: new ones go at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssumptionId {
    IfMatchAccepted,
    StaleIfMatchRefused,
    EmployeeKeptOnReplace,
    EmployeeRemovalIgnored,
    InactiveHiddenByDefault,
    PageSizeOver25Refused,
    MaxResultsPageServed,
    RemoveClearsHomeGrant,
    BulkCapAtLeastConfigured,
    GrantShowsInScim,
    GrantInHomeDivision,
    BadIdRefusesBatch,
    NoPerSubjectResults,
    RemoveOtherDivisions,
    GroupGrantsInScim,
    AuditViewPermitted,
    AuditQueryableWithinLag,
    AuditEntityTypeRole,
    AuditMemberActions,
    AuditEntityIsRole,
    AuditNamesUser,
    AuditNamesOwnClient,
}

impl AssumptionId {
    pub const ALL: [AssumptionId; 22] = [
        Self::IfMatchAccepted,
        Self::StaleIfMatchRefused,
        Self::EmployeeKeptOnReplace,
        Self::EmployeeRemovalIgnored,
        Self::InactiveHiddenByDefault,
        Self::PageSizeOver25Refused,
        Self::MaxResultsPageServed,
        Self::RemoveClearsHomeGrant,
        Self::BulkCapAtLeastConfigured,
        Self::GrantShowsInScim,
        Self::GrantInHomeDivision,
        Self::BadIdRefusesBatch,
        Self::NoPerSubjectResults,
        Self::RemoveOtherDivisions,
        Self::GroupGrantsInScim,
        Self::AuditViewPermitted,
        Self::AuditQueryableWithinLag,
        Self::AuditEntityTypeRole,
        Self::AuditMemberActions,
        Self::AuditEntityIsRole,
        Self::AuditNamesUser,
        Self::AuditNamesOwnClient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::IfMatchAccepted => "if_match_accepted",
            Self::StaleIfMatchRefused => "stale_if_match_refused",
            Self::EmployeeKeptOnReplace => "employee_kept_on_replace",
            Self::EmployeeRemovalIgnored => "employee_removal_ignored",
            Self::InactiveHiddenByDefault => "inactive_hidden_by_default",
            Self::PageSizeOver25Refused => "page_size_over_25_refused",
            Self::MaxResultsPageServed => "max_results_page_served",
            Self::RemoveClearsHomeGrant => "remove_clears_home_grant",
            Self::BulkCapAtLeastConfigured => "bulk_cap_at_least_configured",
            Self::GrantShowsInScim => "grant_shows_in_scim",
            Self::GrantInHomeDivision => "grant_in_home_division",
            Self::BadIdRefusesBatch => "bad_id_refuses_batch",
            Self::NoPerSubjectResults => "no_per_subject_results",
            Self::RemoveOtherDivisions => "remove_other_divisions",
            Self::GroupGrantsInScim => "group_grants_in_scim",
            Self::AuditViewPermitted => "audit_view_permitted",
            Self::AuditQueryableWithinLag => "audit_queryable_within_lag",
            Self::AuditEntityTypeRole => "audit_entity_type_role",
            Self::AuditMemberActions => "audit_member_actions",
            Self::AuditEntityIsRole => "audit_entity_is_role",
            Self::AuditNamesUser => "audit_names_user",
            Self::AuditNamesOwnClient => "audit_names_own_client",
        }
    }

    /// What rolesync takes for granted, in one line.
    pub fn statement(self) -> &'static str {
        match self {
            Self::IfMatchAccepted => {
                "a SCIM PATCH carrying the current version in If-Match is applied and answers a new ETag"
            }
            Self::StaleIfMatchRefused => {
                "a SCIM PATCH carrying a stale If-Match is refused with 409 and changes nothing"
            }
            Self::EmployeeKeptOnReplace => {
                "a SCIM replace of roles without Employee keeps Employee"
            }
            Self::EmployeeRemovalIgnored => {
                "a SCIM remove of roles[value eq \"Employee\"] is accepted and Employee stays"
            }
            Self::InactiveHiddenByDefault => {
                "GET /users without a filter lists active users only (totalResults drops by one when the test user is inactive)"
            }
            Self::PageSizeOver25Refused => {
                "GET /users with count over 25 and no attributes answers 429 too.many.requests"
            }
            Self::MaxResultsPageServed => {
                "a page of ServiceProviderConfig filter.maxResults users with attributes is served"
            }
            Self::RemoveClearsHomeGrant => {
                "PUT roles/{id}/users/remove takes the role away and SCIM roles stops listing it"
            }
            Self::BulkCapAtLeastConfigured => {
                "a bulk call takes target.bulk_max_subjects ids (users/remove with the test user's id repeated that many times)"
            }
            Self::GrantShowsInScim => {
                "a grant through POST authorization/roles/{id} in the home division shows in SCIM roles at once"
            }
            Self::GrantInHomeDivision => {
                "that grant is listed in GET divisions/{home}/grants with subjectId and role"
            }
            Self::BadIdRefusesBatch => {
                "a bulk call with one id naming nobody is refused whole, nothing applied"
            }
            Self::NoPerSubjectResults => {
                "bulk calls give no per-subject result (grant: no body; remove: a list of strings; a refusal does not name the bad id)"
            }
            Self::RemoveOtherDivisions => {
                "users/remove clears the role in the home division (what it does in other divisions is unknown)"
            }
            Self::GroupGrantsInScim => "SCIM roles lists direct grants, not group-inherited ones",
            Self::AuditViewPermitted => {
                "the OAuth client may query the audit trail (audits:audit:view): POST /api/v2/audits/query/realtime answers"
            }
            Self::AuditQueryableWithinLag => {
                "a role change is queryable through the realtime audit query (service PeoplePermissions) within drift.lag_secs of its eventDate (measured, to the second)"
            }
            Self::AuditEntityTypeRole => {
                "every role change of a user, through SCIM and through the Authorization API, is audited with entityType Role"
            }
            Self::AuditMemberActions => {
                "a grant is audited with action MemberAdd (or Add), a removal with MemberRemove (or Remove)"
            }
            Self::AuditEntityIsRole => {
                "a role change's message names the role in entity (entity.id its id, entity.name its name)"
            }
            Self::AuditNamesUser => {
                "a role change's message names the changed user where the feed reads it (context.userId, or propertyChanges of users)"
            }
            Self::AuditNamesOwnClient => {
                "a change made with rolesync's OAuth client is audited with client.id = target.client_id and no user"
            }
        }
    }

    /// Where the claim comes from.
    pub fn source(self) -> &'static str {
        match self {
            Self::IfMatchAccepted => {
                "README (Never a blind write); genesys-cloud-scim.md §2.5 (meta.version = ETag)"
            }
            Self::StaleIfMatchRefused => {
                "swagger PATCH /scim/v2/users/{id} responses (409); emulator README, Decisions"
            }
            Self::EmployeeKeptOnReplace => {
                "docs/bulk-grants.md assumption 15; README (replace keeps Employee)"
            }
            Self::EmployeeRemovalIgnored => {
                "emulator README, Decisions (removing Employee is ignored)"
            }
            Self::InactiveHiddenByDefault => {
                "swagger GET /scim/v2/users filter: \"If nothing is specified, returns all active users\""
            }
            Self::PageSizeOver25Refused => {
                "swagger GET /scim/v2/users count: pages over 25 may return 429"
            }
            Self::MaxResultsPageServed => {
                "ServiceProviderConfig filter.maxResults; rolesync's directory scan"
            }
            Self::RemoveClearsHomeGrant => "docs/bulk-grants.md assumptions 3 and 4",
            Self::BulkCapAtLeastConfigured => "docs/bulk-grants.md assumptions 2 and 5",
            Self::GrantShowsInScim => "docs/bulk-grants.md assumptions 1, 8 and 9",
            Self::GrantInHomeDivision => "docs/bulk-grants.md assumptions 17 and 18",
            Self::BadIdRefusesBatch => "docs/bulk-grants.md assumptions 6 and 7",
            Self::NoPerSubjectResults => {
                "docs/bulk-grants.md (A refused batch: bisection), assumption 3"
            }
            Self::RemoveOtherDivisions => "docs/bulk-grants.md assumption 4",
            Self::GroupGrantsInScim => "docs/bulk-grants.md assumption 10",
            Self::AuditViewPermitted => "SDK AuditApi.md (permission audits:audit:view)",
            Self::AuditQueryableWithinLag => {
                "none: the delay is undocumented (emulator README, Audit trail; README, Drift)"
            }
            Self::AuditEntityTypeRole | Self::AuditMemberActions => {
                "third-party material; the notification model's enums (emulator README, Audit trail)"
            }
            Self::AuditEntityIsRole | Self::AuditNamesUser => {
                "none: undocumented (emulator README, Audit trail)"
            }
            Self::AuditNamesOwnClient => {
                "AuditLogMessage has user and client; which is set is undocumented (emulator README, Audit trail)"
            }
        }
    }
}

/// What a finding says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Confirmed,
    Refuted,
    NotTestable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Refuted => "refuted",
            Self::NotTestable => "not testable",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: AssumptionId,
    pub statement: &'static str,
    pub source: &'static str,
    pub verdict: Verdict,
    /// What was seen: status codes, headers, fields.
    pub evidence: String,
}

impl Finding {
    pub fn new(id: AssumptionId, verdict: Verdict, evidence: impl Into<String>) -> Finding {
        Finding {
            id,
            statement: id.statement(),
            source: id.source(),
            verdict,
            evidence: evidence.into(),
        }
    }
}

/// One answer, as the judgements need it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
}

impl Seen {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `code` (Genesys) or `scimType` of an error body, for the evidence.
    pub fn code(&self) -> String {
        ["code", "scimType"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(Value::as_str))
            .unwrap_or("-")
            .to_owned()
    }

    pub fn summary(&self) -> String {
        if self.ok() {
            format!("{}", self.status)
        } else {
            format!("{} {}", self.status, self.code())
        }
    }
}

/// The role names of a SCIM user body.
pub fn roles_of(user: &Value) -> Vec<String> {
    let mut roles: Vec<String> = user
        .get("roles")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.get("value").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    roles.sort();
    roles
}

use AssumptionId as A;
use Verdict::{Confirmed, NotTestable, Refuted};

pub fn if_match_accepted(before: Option<&str>, patch: &Seen) -> Finding {
    let evidence = format!(
        "PATCH with If-Match {}: {}, ETag {}",
        before.unwrap_or("(none known)"),
        patch.summary(),
        patch.etag.as_deref().unwrap_or("(none)")
    );
    let verdict = match (before, patch.ok(), patch.etag.as_deref()) {
        (None, _, _) => NotTestable,
        (Some(b), true, Some(after)) if b != after => Confirmed,
        _ => Refuted,
    };
    Finding::new(A::IfMatchAccepted, verdict, evidence)
}

/// `unchanged`: the user's version after the stale PATCH is the one before it.
pub fn stale_if_match_refused(stale: &Seen, unchanged: bool) -> Finding {
    let evidence = format!(
        "PATCH with the stale If-Match: {}; user {}",
        stale.summary(),
        if unchanged { "unchanged" } else { "changed" }
    );
    let verdict = if stale.status == 409 && unchanged {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::StaleIfMatchRefused, verdict, evidence)
}

pub fn employee_kept_on_replace(patch: &Seen, roles_after: &[String]) -> Finding {
    let kept = roles_after.iter().any(|r| r == "Employee");
    let evidence = format!(
        "replace of roles without Employee: {}; roles after: {}",
        patch.summary(),
        roles_after.join(", ")
    );
    let verdict = if patch.ok() && kept {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::EmployeeKeptOnReplace, verdict, evidence)
}

pub fn employee_removal_ignored(patch: &Seen, roles_after: &[String]) -> Finding {
    let kept = roles_after.iter().any(|r| r == "Employee");
    let evidence = format!(
        "remove roles[value eq \"Employee\"]: {}; Employee {}",
        patch.summary(),
        if kept { "still held" } else { "gone" }
    );
    let verdict = if patch.ok() && kept {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::EmployeeRemovalIgnored, verdict, evidence)
}

/// `active_total` / `inactive_total`: `totalResults` of the unfiltered listing with the test
/// user active, then inactive.
pub fn inactive_hidden(active_total: Option<u64>, inactive_total: Option<u64>) -> Finding {
    let show = |t: Option<u64>| t.map_or("(no answer)".to_owned(), |t| t.to_string());
    let evidence = format!(
        "unfiltered totalResults: {} with the test user active, {} with it inactive",
        show(active_total),
        show(inactive_total)
    );
    let verdict = match (active_total, inactive_total) {
        (Some(a), Some(i)) if a == i + 1 => Confirmed,
        (Some(_), Some(_)) => Refuted,
        _ => NotTestable,
    };
    Finding::new(A::InactiveHiddenByDefault, verdict, evidence)
}

pub fn page_size_rule(over_25: &Seen) -> Finding {
    let evidence = format!("GET /users?count=26 (no attributes): {}", over_25.summary());
    let verdict = if over_25.status == 429 && over_25.code() == "too.many.requests" {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::PageSizeOver25Refused, verdict, evidence)
}

pub fn max_results_page(max_results: Option<u64>, page: Option<&Seen>) -> Finding {
    let (Some(max), Some(page)) = (max_results, page) else {
        return Finding::new(
            A::MaxResultsPageServed,
            NotTestable,
            "ServiceProviderConfig names no filter.maxResults",
        );
    };
    let served = page
        .body
        .get("Resources")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    let evidence = format!(
        "filter.maxResults {max}; GET /users?count={max}&attributes=id: {}, {served} resources",
        page.summary()
    );
    let verdict = if page.ok() && served <= max {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::MaxResultsPageServed, verdict, evidence)
}

pub fn remove_clears(remove: &Seen, role: &str, roles_after: &[String]) -> Finding {
    let held = roles_after.iter().any(|r| r == role);
    let evidence = format!(
        "users/remove of {role}: {} body {}; SCIM roles after: {}",
        remove.summary(),
        shape(&remove.body),
        roles_after.join(", ")
    );
    let verdict = if remove.ok() && !held {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::RemoveClearsHomeGrant, verdict, evidence)
}

pub fn bulk_cap(n: usize, answer: &Seen) -> Finding {
    let message = answer
        .body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let evidence = format!(
        "users/remove of a role the test user lacks, its id {n} times: {} {message}",
        answer.summary()
    );
    let verdict = if answer.ok() { Confirmed } else { Refuted };
    Finding::new(A::BulkCapAtLeastConfigured, verdict, evidence)
}

pub fn grant_shows(grant: &Seen, role: &str, roles_after: &[String]) -> Finding {
    let held = roles_after.iter().any(|r| r == role);
    let evidence = format!(
        "grant of {role} in home: {}; SCIM roles right after: {}",
        grant.summary(),
        roles_after.join(", ")
    );
    let verdict = if grant.ok() && held {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::GrantShowsInScim, verdict, evidence)
}

/// `found`: Some(true) the grant was in the pages read, Some(false) all pages were read and it
/// was not, None the listing was too long to read whole or not readable.
pub fn grant_in_home(found: Option<bool>, pages: &[Seen]) -> Finding {
    let statuses: Vec<String> = pages.iter().map(Seen::summary).collect();
    let evidence = format!(
        "division grants pages: {}; grant {}",
        statuses.join(", "),
        match found {
            Some(true) => "listed",
            Some(false) => "not listed",
            None => "not found in the pages read",
        }
    );
    let verdict = match found {
        Some(true) => Confirmed,
        Some(false) => Refuted,
        None if pages.iter().any(|p| !p.ok()) => Refuted,
        None => NotTestable,
    };
    Finding::new(A::GrantInHomeDivision, verdict, evidence)
}

pub fn bad_id(refusal: &Seen, still_held: bool) -> Finding {
    let evidence = format!(
        "users/remove of a held role with the test user and a random id: {}; role {}",
        refusal.summary(),
        if still_held {
            "still held"
        } else {
            "taken away"
        }
    );
    let verdict = if !refusal.ok() && still_held {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::BadIdRefusesBatch, verdict, evidence)
}

/// `bad_id`: the random id of the refused batch, to see whether the refusal names it.
pub fn no_per_subject(grant: &Seen, remove: &Seen, refusal: &Seen, bad_id: &str) -> Finding {
    let strings_only = match &remove.body {
        Value::Array(items) => items.iter().all(Value::is_string),
        Value::Null => true,
        _ => false,
    };
    let names_bad_id = refusal.body.to_string().contains(bad_id);
    let evidence = format!(
        "grant body {}; remove body {}; refusal {} the bad id",
        shape(&grant.body),
        shape(&remove.body),
        if names_bad_id {
            "names"
        } else {
            "does not name"
        }
    );
    let verdict = if grant.body.is_null() && strings_only && !names_bad_id {
        Confirmed
    } else {
        Refuted
    };
    Finding::new(A::NoPerSubjectResults, verdict, evidence)
}

/// What only a second division or a group could show: never tested, touching only the test
/// user in the home division.
pub fn untestable() -> [Finding; 2] {
    [
        Finding::new(
            A::RemoveOtherDivisions,
            NotTestable,
            "needs a grant in a second division; sandbox-check grants in the home division only",
        ),
        Finding::new(
            A::GroupGrantsInScim,
            NotTestable,
            "needs a group holding a role with the test user as member; sandbox-check changes no group",
        ),
    ]
}

/// A short description of a body's shape, for the evidence.
pub fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Array(a) if a.iter().all(Value::is_string) => "a list of strings",
        Value::Array(_) => "a list of objects",
        Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_412_refutes_the_409_claim() {
        let seen = Seen {
            status: 412,
            ..Default::default()
        };
        assert_eq!(stale_if_match_refused(&seen, true).verdict, Refuted);
        let seen = Seen {
            status: 409,
            ..Default::default()
        };
        assert_eq!(stale_if_match_refused(&seen, true).verdict, Confirmed);
        assert_eq!(stale_if_match_refused(&seen, false).verdict, Refuted);
    }

    #[test]
    fn a_refusal_naming_the_bad_id_is_a_per_subject_result() {
        let ok = Seen {
            status: 204,
            ..Default::default()
        };
        let remove = Seen {
            status: 200,
            body: json!(["a"]),
            ..Default::default()
        };
        let refusal = Seen {
            status: 400,
            body: json!({"message": "subject 1234 not found"}),
            ..Default::default()
        };
        assert_eq!(
            no_per_subject(&ok, &remove, &refusal, "1234").verdict,
            Refuted
        );
        assert_eq!(
            no_per_subject(&ok, &remove, &refusal, "9").verdict,
            Confirmed
        );
    }

    #[test]
    fn ids_are_unique_and_in_order() {
        let names: std::collections::BTreeSet<_> =
            AssumptionId::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), AssumptionId::ALL.len());
    }
}
