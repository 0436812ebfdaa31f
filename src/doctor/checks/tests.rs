//! Each check from hand-made observations: a healthy org, then one fault at a time, each
//! turning its own line and no other ✘.

use super::*;
use serde_json::json;
use std::time::Duration;

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn reply(status: u16, body: serde_json::Value) -> Probe {
    Probe::Answered(Reply {
        status,
        ratelimit_allowed: Some("300".into()),
        date: Some(httpdate::fmt_http_date(at())),
        received_at: at(),
        body,
    })
}

const ORG: &[&str] = &[
    "Employee",
    "Agent",
    "Queue Member",
    "Wrap Up",
    "Reporting",
    "Supervisor",
    "System Administrator",
    "Reporting Auditor",
    "Master Admin",
];

fn catalog(names: &[&str]) -> RolesProbe {
    let entities: Vec<_> = names.iter().map(|n| json!({"name": n})).collect();
    RolesProbe {
        pages: vec![reply(200, json!({"entities": entities, "pageCount": 1}))],
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        complete: true,
    }
}

fn healthy() -> Observations {
    Observations {
        token: TokenProbe::Requested(reply(
            200,
            json!({"access_token": "", "token_type": "bearer", "expires_in": 86400}),
        )),
        service_provider_config: Some(reply(
            200,
            json!({"filter": {"maxResults": 100}, "etag": {"supported": true}}),
        )),
        users: Some(reply(200, json!({"totalResults": 3}))),
        roles: Some(catalog(ORG)),
        home_division: Some(reply(200, json!({"id": "d1", "name": "Home"}))),
        grants: None,
        calls: 5,
    }
}

fn expected() -> Expected {
    Expected {
        policy_roles: ORG[1..8].iter().map(|s| (*s).to_owned()).collect(),
        protected_roles: ["Employee".to_owned()].into_iter().collect(),
        requests_per_minute: 280,
        authorization_path: false,
    }
}

fn statuses(o: &Observations, e: &Expected) -> Vec<(CheckId, CheckStatus)> {
    evaluate(o, e)
        .into_iter()
        .map(|c| (c.id, c.status))
        .collect()
}

/// The checks that failed, with their summary and fix.
fn failed(o: &Observations, e: &Expected) -> Vec<Check> {
    evaluate(o, e)
        .into_iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect()
}

#[test]
fn a_healthy_org_passes_everything_but_the_write_permissions() {
    let checks = evaluate(&healthy(), &expected());
    let order: Vec<CheckId> = checks.iter().map(|c| c.id).collect();
    assert_eq!(order, CheckId::ALL);
    for c in &checks {
        let want = if c.id == CheckId::WritePermissions {
            CheckStatus::Unknown
        } else {
            CheckStatus::Pass
        };
        assert_eq!(c.status, want, "{c:?}");
    }
    let unmanaged = &checks[3];
    assert!(
        unmanaged.summary.contains("\"Master Admin\""),
        "{unmanaged:?}"
    );
    assert!(!unmanaged.summary.contains("Employee"), "{unmanaged:?}");
    assert!(checks[0].summary.contains("86400"));
    let report = crate::doctor::Report { checks, calls: 5 };
    assert_eq!(report.verdict(), crate::doctor::Verdict::Pass);
}

#[test]
fn a_refused_secret_fails_the_token_and_checks_nothing_else() {
    let o = Observations {
        token: TokenProbe::Requested(reply(
            401,
            json!({"code": "bad.credentials", "message": "Invalid login credentials."}),
        )),
        service_provider_config: None,
        users: None,
        roles: None,
        home_division: None,
        grants: None,
        calls: 1,
    };
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::Token);
    assert!(f[0].summary.contains("401 bad.credentials"), "{f:?}");
    assert!(f[0].fix.contains("client_secret"));
    assert!(
        statuses(&o, &expected())
            .iter()
            .skip(1)
            .all(|(id, s)| *s == CheckStatus::Unknown || *id == CheckId::Clock)
    );
}

#[test]
fn a_missing_permission_is_named_and_the_catalog_is_unknown() {
    let mut o = healthy();
    let refused = reply(
        403,
        json!({"code": "missing.permissions", "message": "Unable to perform the requested action. You are missing the following permission(s): [authorization:role:view]"}),
    );
    o.roles = Some(RolesProbe {
        pages: vec![refused],
        names: vec![],
        complete: false,
    });
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::ReadPermissions);
    assert!(f[0].summary.contains("authorization:role:view"), "{f:?}");
    assert!(f[0].fix.starts_with("add authorization:role:view"), "{f:?}");
    let s = statuses(&o, &expected());
    assert_eq!(s[2], (CheckId::PolicyRoles, CheckStatus::Unknown));
    assert_eq!(s[3], (CheckId::UnmanagedRoles, CheckStatus::Unknown));
}

#[test]
fn a_policy_role_the_org_lacks_fails_with_the_near_name() {
    let mut o = healthy();
    let org: Vec<&str> = ORG
        .iter()
        .map(|r| if *r == "Wrap Up" { "Wrap up" } else { *r })
        .collect();
    o.roles = Some(catalog(&org));
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::PolicyRoles);
    assert!(
        f[0].summary
            .contains("\"Wrap Up\" (the org has \"Wrap up\")"),
        "{f:?}"
    );
    assert!(f[0].fix.contains("unknown_target_role"));
    // A partial catalog cannot prove a role absent.
    if let Some(r) = o.roles.as_mut() {
        r.complete = false;
    }
    assert!(failed(&o, &expected()).is_empty());
}

#[test]
fn no_rate_limit_headers_or_a_rate_above_the_limit_fail() {
    let mut o = healthy();
    for p in [
        o.service_provider_config.as_mut(),
        o.users.as_mut(),
        o.home_division.as_mut(),
    ]
    .into_iter()
    .flatten()
    .chain(o.roles.iter_mut().flat_map(|r| r.pages.iter_mut()))
    {
        if let Probe::Answered(r) = p {
            r.ratelimit_allowed = None;
        }
    }
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::RateLimit);
    assert!(f[0].summary.contains("no inin-ratelimit-allowed"), "{f:?}");

    let fast = Expected {
        requests_per_minute: 600,
        ..expected()
    };
    let f = failed(&healthy(), &fast);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::RateLimit);
    assert!(f[0].fix.contains("at most 300"), "{f:?}");
}

#[test]
fn a_target_down_fails_scim_and_leaves_the_rest_unknown() {
    let mut o = healthy();
    o.service_provider_config = Some(reply(503, json!({"code": "service.unavailable"})));
    (o.users, o.roles, o.home_division) = (None, None, None);
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::Scim);
    assert!(f[0].summary.contains("503"), "{f:?}");
    let report = crate::doctor::Report {
        checks: evaluate(&o, &expected()),
        calls: 2,
    };
    assert_eq!(report.verdict(), crate::doctor::Verdict::Fail);
    assert!(report.table().contains("✘ scim"), "{}", report.table());

    o.service_provider_config = Some(Probe::Unreachable("connection refused".into()));
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].summary.contains("connection refused"), "{f:?}");
}

#[test]
fn clock_skew_beyond_half_a_minute_fails() {
    let mut o = healthy();
    for p in [o.service_provider_config.as_mut(), o.users.as_mut()]
        .into_iter()
        .flatten()
    {
        if let Probe::Answered(r) = p {
            r.received_at = at() + Duration::from_secs(95);
        }
    }
    let f = failed(&o, &expected());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::Clock);
    assert!(f[0].summary.contains("95 s ahead of"), "{f:?}");
}

#[test]
fn the_home_division_fails_only_when_the_authorization_path_needs_it() {
    let mut o = healthy();
    o.home_division = Some(reply(404, json!({"code": "not.found"})));
    assert!(failed(&o, &expected()).is_empty());
    let authz = Expected {
        authorization_path: true,
        ..expected()
    };
    let f = failed(&o, &authz);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, CheckId::HomeDivision);
}

#[test]
fn a_static_token_is_unknown() {
    let mut o = healthy();
    o.token = TokenProbe::Static;
    let report = crate::doctor::Report {
        checks: evaluate(&o, &expected()),
        calls: 4,
    };
    assert_eq!(report.checks[0].status, CheckStatus::Unknown);
    assert_eq!(report.verdict(), crate::doctor::Verdict::Unknown);
}
