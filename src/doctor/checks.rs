//! The checks of `doctor`: pure functions of what the probe's calls returned
//! (`Observations`) and what the configuration expects (`Expected`). No I/O, no clock: the
//! time each answer arrived is part of the observations.

use super::Check;
use crate::domain::{CheckId, CheckStatus};
use crate::policy::RoleSet;
use crate::policy::org::{diff_names, near_match};
use std::time::SystemTime;

/// One answer of the target, reduced to what the checks read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// `inin-ratelimit-allowed`, as sent.
    pub ratelimit_allowed: Option<String>,
    /// `Date`, as sent.
    pub date: Option<String>,
    /// This host's clock when the answer arrived.
    pub received_at: SystemTime,
    /// The JSON body (`Null` when it was not JSON). A token answer's `access_token` is blanked.
    pub body: serde_json::Value,
}

/// One call: answered, or not (connection refused, time-out, TLS...).
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Answered(Reply),
    Unreachable(String),
}

impl Probe {
    fn reply(&self) -> Option<&Reply> {
        match self {
            Probe::Answered(r) => Some(r),
            Probe::Unreachable(_) => None,
        }
    }

    fn ok(&self) -> Option<&Reply> {
        self.reply().filter(|r| (200..300).contains(&r.status))
    }

    fn status(&self) -> Option<u16> {
        self.reply().map(|r| r.status)
    }

    /// The target could not be worked with at all: no answer, or a 5xx.
    pub(crate) fn is_down(&self) -> bool {
        self.status().is_none_or(|s| s >= 500)
    }

    /// `503`, or the transport error, for a summary.
    fn describe(&self) -> String {
        match self {
            Probe::Answered(r) => match error_code(&r.body) {
                Some(code) => format!("{} {code}", r.status),
                None => r.status.to_string(),
            },
            Probe::Unreachable(e) => format!("no answer: {e}"),
        }
    }
}

/// How the token was obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenProbe {
    /// `target.bearer_token`: no token request was made.
    Static,
    Requested(Probe),
}

/// The role catalog's pages as read (`GET /api/v2/authorization/roles?pageSize=500`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RolesProbe {
    /// Every page's answer, in order.
    pub pages: Vec<Probe>,
    /// The role names of the pages read.
    pub names: Vec<String>,
    /// Every page was read (the last one said so, `pageCount`).
    pub complete: bool,
}

/// What the calls returned. A call not made (an earlier one failed) is None.
#[derive(Debug, Clone, PartialEq)]
pub struct Observations {
    pub token: TokenProbe,
    pub service_provider_config: Option<Probe>,
    pub users: Option<Probe>,
    pub roles: Option<RolesProbe>,
    pub home_division: Option<Probe>,
    /// Made only with `target.write_api = "authorization"`.
    pub grants: Option<Probe>,
    pub calls: u32,
}

/// What the configuration expects of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The roles the policy can write (its catalog).
    pub policy_roles: RoleSet,
    pub protected_roles: RoleSet,
    pub requests_per_minute: u32,
    pub authorization_path: bool,
}

/// The largest clock difference that passes. `Date` has a resolution of one second and is set
/// when the target answers; tokens, leases, `Retry-After` dates and audit times tolerate this.
const MAX_SKEW_SECS: i64 = 30;

/// Org roles named in a summary at most; the rest are counted.
const LISTED: usize = 20;

/// Every check, in `CheckId` order.
pub fn evaluate(o: &Observations, e: &Expected) -> Vec<Check> {
    let blocked = blocked_by(o);
    let blocked = blocked.as_deref();
    vec![
        token(&o.token),
        scim(o.service_provider_config.as_ref(), blocked),
        policy_roles(o.roles.as_ref(), e, blocked),
        unmanaged_roles(o.roles.as_ref(), e, blocked),
        home_division(o.home_division.as_ref(), e, blocked),
        read_permissions(o, blocked),
        write_permissions(e),
        rate_limit(o, e, blocked),
        clock(o),
    ]
}

fn check(id: CheckId, status: CheckStatus, summary: String, fix: impl Into<String>) -> Check {
    Check {
        id,
        status,
        summary,
        fix: fix.into(),
    }
}

/// Why the calls after the token stopped, if they did: checks that needed them are `?`.
fn blocked_by(o: &Observations) -> Option<String> {
    if let TokenProbe::Requested(p) = &o.token
        && token_of(p).is_none()
    {
        return Some("no token (see token)".into());
    }
    match &o.service_provider_config {
        Some(p) if p.is_down() => Some(format!("the target did not answer ({})", p.describe())),
        _ => None,
    }
}

fn not_checked(id: CheckId, blocked: Option<&str>) -> Check {
    check(
        id,
        CheckStatus::Unknown,
        format!(
            "not checked: {}",
            blocked.unwrap_or("the call was not made")
        ),
        "fix the failing check above, then run doctor again",
    )
}

/// The token answer's `expires_in`, when the answer holds a token.
fn token_of(p: &Probe) -> Option<Option<u64>> {
    let r = p.ok()?;
    // The probe keeps the field, with the token itself blanked out.
    r.body.get("access_token")?.as_str()?;
    Some(r.body.get("expires_in").and_then(serde_json::Value::as_u64))
}

fn error_code(body: &serde_json::Value) -> Option<&str> {
    body.get("code")
        .or_else(|| body.get("error"))
        .and_then(serde_json::Value::as_str)
}

fn token(t: &TokenProbe) -> Check {
    let id = CheckId::Token;
    let p = match t {
        TokenProbe::Static => {
            return check(
                id,
                CheckStatus::Unknown,
                "a static token is configured (target.bearer_token); its lifetime is unknown"
                    .into(),
                "prefer client credentials (target.client_id, client_secret, token_url): rolesync renews those tokens itself",
            );
        }
        TokenProbe::Requested(p) => p,
    };
    if let Some(expires_in) = token_of(p) {
        let summary = match expires_in {
            Some(s) => format!("token granted; lifetime {s} s (expires_in)"),
            None => "token granted without expires_in; rolesync renews it on a 401".into(),
        };
        return check(id, CheckStatus::Pass, summary, "");
    }
    match p.status() {
        None => check(
            id,
            CheckStatus::Fail,
            format!("the token endpoint did not answer ({})", p.describe()),
            "check target.token_url (https://login.<your region's domain>/oauth/token) and that this host can reach it",
        ),
        Some(400 | 401 | 403) => check(
            id,
            CheckStatus::Fail,
            format!("the token endpoint refused the client ({})", p.describe()),
            "check target.client_id and target.client_secret (or client_secret_file) against the OAuth client (Client Credentials grant) in Genesys Cloud Admin > OAuth",
        ),
        Some(_) => check(
            id,
            CheckStatus::Fail,
            format!("the token endpoint answered {}", p.describe()),
            "check target.token_url; if it is right, retry later (Genesys Cloud status page)",
        ),
    }
}

fn scim(p: Option<&Probe>, blocked: Option<&str>) -> Check {
    let id = CheckId::Scim;
    let Some(p) = p else {
        return not_checked(id, blocked);
    };
    if let Some(r) = p.ok() {
        let page = r
            .body
            .pointer("/filter/maxResults")
            .and_then(serde_json::Value::as_u64);
        let etag = r
            .body
            .pointer("/etag/supported")
            .and_then(serde_json::Value::as_bool);
        let page = page.map_or("not stated".to_owned(), |n| n.to_string());
        if etag == Some(false) {
            return check(
                id,
                CheckStatus::Fail,
                format!("ServiceProviderConfig read: page size {page}, ETags not supported"),
                "rolesync writes only with If-Match: point target.scim_base at Genesys Cloud SCIM, which supports ETags",
            );
        }
        let etag = if etag == Some(true) {
            "supported"
        } else {
            "not stated"
        };
        return check(
            id,
            CheckStatus::Pass,
            format!("ServiceProviderConfig read: page size {page}, ETags {etag}"),
            "",
        );
    }
    match p.status() {
        None => check(
            id,
            CheckStatus::Fail,
            format!("SCIM did not answer ({})", p.describe()),
            "check target.scim_base (https://api.<your region's domain>/api/v2/scim/v2) and that this host can reach it",
        ),
        Some(s) if s >= 500 => check(
            id,
            CheckStatus::Fail,
            format!("SCIM answered {}: the target is unavailable", p.describe()),
            "retry later; check the Genesys Cloud status page for your region",
        ),
        Some(401) => check(
            id,
            CheckStatus::Fail,
            format!("SCIM refused the token ({})", p.describe()),
            "target.token_url and target.scim_base must be of the same region and org",
        ),
        Some(403) => check(
            id,
            CheckStatus::Unknown,
            format!("ServiceProviderConfig refused ({})", p.describe()),
            "see read_permissions",
        ),
        Some(_) => check(
            id,
            CheckStatus::Fail,
            format!(
                "no SCIM ServiceProviderConfig at target.scim_base ({})",
                p.describe()
            ),
            "set target.scim_base to https://api.<your region's domain>/api/v2/scim/v2",
        ),
    }
}

/// The catalog's names when at least its first page was read.
fn org_names(roles: &RolesProbe) -> Option<RoleSet> {
    roles
        .pages
        .first()
        .and_then(Probe::ok)
        .map(|_| roles.names.iter().cloned().collect())
}

/// Why the catalog could not be read: its first failing page.
fn catalog_failure(roles: &RolesProbe) -> String {
    roles
        .pages
        .iter()
        .find(|p| p.ok().is_none())
        .map_or("no page answered".into(), Probe::describe)
}

fn quoted(names: &[String]) -> String {
    let mut list: Vec<String> = names
        .iter()
        .take(LISTED)
        .map(|n| format!("\"{n}\""))
        .collect();
    if names.len() > LISTED {
        list.push(format!("and {} more", names.len() - LISTED));
    }
    list.join(", ")
}

fn policy_roles(roles: Option<&RolesProbe>, e: &Expected, blocked: Option<&str>) -> Check {
    let id = CheckId::PolicyRoles;
    let Some(roles) = roles else {
        return not_checked(id, blocked);
    };
    let Some(org) = org_names(roles) else {
        return check(
            id,
            CheckStatus::Unknown,
            format!(
                "the org's role catalog could not be read ({})",
                catalog_failure(roles)
            ),
            "see read_permissions (authorization:role:view); until it can be read, a role the org lacks fails user by user",
        );
    };
    let diff = diff_names(&e.policy_roles, &e.protected_roles, &org);
    if diff.missing_from_org.is_empty() {
        return check(
            id,
            CheckStatus::Pass,
            format!(
                "all {} policy roles exist in the org by their exact names",
                e.policy_roles.len()
            ),
            "",
        );
    }
    let named: Vec<String> = diff
        .missing_from_org
        .iter()
        .map(|m| match near_match(m, &org) {
            Some(n) => format!("{m}\" (the org has \"{n}\")"),
            None => format!("{m}\""),
        })
        .map(|s| format!("\"{s}"))
        .collect();
    if !roles.complete {
        return check(
            id,
            CheckStatus::Unknown,
            format!(
                "read {} org roles of a larger catalog; not found among them: {}",
                org.len(),
                named.join(", ")
            ),
            "check these names in Genesys Cloud Admin > Roles/Permissions",
        );
    }
    check(
        id,
        CheckStatus::Fail,
        format!(
            "{} of {} policy roles are missing from the org: {}",
            diff.missing_from_org.len(),
            e.policy_roles.len(),
            named.join(", ")
        ),
        "create them in Genesys Cloud (Admin > Roles/Permissions) or correct their names in the policy file (exact, case-sensitive); until then jobs reject rows needing them (unknown_target_role)",
    )
}

fn unmanaged_roles(roles: Option<&RolesProbe>, e: &Expected, blocked: Option<&str>) -> Check {
    let id = CheckId::UnmanagedRoles;
    let Some(roles) = roles else {
        return not_checked(id, blocked);
    };
    let Some(org) = org_names(roles) else {
        return check(
            id,
            CheckStatus::Unknown,
            format!(
                "the org's role catalog could not be read ({})",
                catalog_failure(roles)
            ),
            "see read_permissions (authorization:role:view)",
        );
    };
    let diff = diff_names(&e.policy_roles, &e.protected_roles, &org);
    let summary = if diff.unmanaged.is_empty() {
        format!(
            "the policy manages every one of the org's {} roles",
            org.len()
        )
    } else {
        format!(
            "{} org roles are not in the policy (rolesync never grants nor removes them): {}",
            diff.unmanaged.len(),
            quoted(&diff.unmanaged)
        )
    };
    check(id, CheckStatus::Pass, summary, "")
}

fn home_division(p: Option<&Probe>, e: &Expected, blocked: Option<&str>) -> Check {
    let id = CheckId::HomeDivision;
    let Some(p) = p else {
        return not_checked(id, blocked);
    };
    if let Some(r) = p.ok()
        && let Some(division) = r.body.get("id").and_then(serde_json::Value::as_str)
    {
        let name = r
            .body
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?");
        return check(
            id,
            CheckStatus::Pass,
            format!("home division \"{name}\" ({division})"),
            "",
        );
    }
    let status = if e.authorization_path {
        CheckStatus::Fail
    } else {
        // Only the Authorization path grants in a division.
        CheckStatus::Unknown
    };
    check(
        id,
        status,
        format!("the home division could not be read ({})", p.describe()),
        "the Authorization path grants in the home division: see read_permissions, or keep target.write_api = \"scim\"",
    )
}

/// Permissions a `403 missing.permissions` names: the bracketed list of its message
/// ("…missing the following permission(s): [a, b]"), else the one the endpoint documents.
fn missing_permissions(r: &Reply, documented: Option<&str>) -> Vec<String> {
    let message = r
        .body
        .get("message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let named: Vec<String> = message
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .map(|p| p.trim().trim_matches('"').to_owned())
                .filter(|p| p.split(':').count() == 3)
                .collect()
        })
        .unwrap_or_default();
    if named.is_empty() {
        documented.map(str::to_owned).into_iter().collect()
    } else {
        named
    }
}

fn read_permissions(o: &Observations, blocked: Option<&str>) -> Check {
    let id = CheckId::ReadPermissions;
    let first_page = o.roles.as_ref().and_then(|r| r.pages.first());
    let reads: [(&str, Option<&Probe>, Option<&str>); 5] = [
        (
            "ServiceProviderConfig",
            o.service_provider_config.as_ref(),
            None,
        ),
        ("SCIM users", o.users.as_ref(), None),
        ("role catalog", first_page, Some("authorization:role:view")),
        ("home division", o.home_division.as_ref(), None),
        (
            "division grants",
            o.grants.as_ref(),
            Some("authorization:grant:view"),
        ),
    ];
    let made: Vec<&str> = reads
        .iter()
        .filter(|(_, p, _)| p.is_some_and(|p| p.reply().is_some()))
        .map(|(what, _, _)| *what)
        .collect();
    if made.is_empty() {
        return not_checked(id, blocked);
    }
    let mut permissions: Vec<String> = Vec::new();
    let mut refused: Vec<&str> = Vec::new();
    for (what, p, documented) in reads {
        if let Some(r) = p.and_then(Probe::reply).filter(|r| r.status == 403) {
            refused.push(what);
            for m in missing_permissions(r, documented) {
                if !permissions.contains(&m) {
                    permissions.push(m);
                }
            }
        }
    }
    if refused.is_empty() {
        return check(
            id,
            CheckStatus::Pass,
            format!("answered without 403: {}", made.join(", ")),
            "",
        );
    }
    let perms = if permissions.is_empty() {
        "permissions the target did not name".to_owned()
    } else {
        permissions.join(", ")
    };
    check(
        id,
        CheckStatus::Fail,
        format!(
            "the OAuth client lacks {perms} (403 on {})",
            refused.join(", ")
        ),
        format!(
            "add {perms} to the role of rolesync's OAuth client (Genesys Cloud Admin > OAuth > Roles)"
        ),
    )
}

fn write_permissions(e: &Expected) -> Check {
    let mut summary = "not probed, only a write tells: SCIM PATCH needs directory:user:edit with \
                       authorization:grant:add and authorization:grant:delete"
        .to_owned();
    if e.authorization_path {
        summary.push_str(
            "; the Authorization path needs authorization:grant:add and authorization:grant:delete",
        );
    }
    check(
        CheckId::WritePermissions,
        CheckStatus::Unknown,
        summary,
        "make sure the OAuth client's role holds them, then run a one-user job first (a refused write names the permission)",
    )
}

/// Every answer of the target's API (not the token endpoint's), in call order.
fn api_replies(o: &Observations) -> Vec<&Reply> {
    let mut all: Vec<&Probe> = Vec::new();
    all.extend(o.service_provider_config.as_ref());
    all.extend(o.users.as_ref());
    all.extend(o.roles.iter().flat_map(|r| r.pages.iter()));
    all.extend(o.home_division.as_ref());
    all.extend(o.grants.as_ref());
    all.into_iter().filter_map(Probe::reply).collect()
}

fn rate_limit(o: &Observations, e: &Expected, blocked: Option<&str>) -> Check {
    let id = CheckId::RateLimit;
    let replies = api_replies(o);
    let answered: Vec<&&Reply> = replies.iter().filter(|r| r.status < 500).collect();
    if answered.is_empty() {
        return not_checked(id, blocked);
    }
    let allowed = answered.iter().find_map(|r| {
        r.ratelimit_allowed
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let m = e.requests_per_minute;
    match allowed {
        None => check(
            id,
            CheckStatus::Fail,
            format!(
                "no inin-ratelimit-allowed header in {} answers: rolesync paces at target.requests_per_minute = {m} alone and learns the limit only from 429s",
                answered.len()
            ),
            "confirm the org's API limit with Genesys (300 a minute per token by default) and keep target.requests_per_minute under it",
        ),
        Some(n) if u64::from(m) > n => check(
            id,
            CheckStatus::Fail,
            format!(
                "the target allows {n} calls a minute per token; target.requests_per_minute is {m}"
            ),
            format!(
                "set target.requests_per_minute to at most {n} (a little under leaves room for other clients of the token)"
            ),
        ),
        Some(n) => check(
            id,
            CheckStatus::Pass,
            format!(
                "inin-ratelimit-allowed: {n} a minute; rolesync paces at {m} (target.requests_per_minute)"
            ),
            "",
        ),
    }
}

fn clock(o: &Observations) -> Check {
    let id = CheckId::Clock;
    let token = match &o.token {
        TokenProbe::Requested(p) => p.reply(),
        TokenProbe::Static => None,
    };
    // The API's answers first: they come from the host rolesync works with.
    let dated = api_replies(o).into_iter().chain(token).find_map(|r| {
        let date = httpdate::parse_http_date(r.date.as_deref()?).ok()?;
        Some((date, r.received_at))
    });
    let Some((target, local)) = dated else {
        return check(
            id,
            CheckStatus::Unknown,
            "no answer carried a readable Date header".into(),
            "compare this host's clock with an NTP server by hand",
        );
    };
    let skew = match local.duration_since(target) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
    };
    if skew.abs() <= MAX_SKEW_SECS {
        return check(
            id,
            CheckStatus::Pass,
            format!(
                "this host's clock is within {} s of the target's Date ({skew:+} s)",
                MAX_SKEW_SECS
            ),
            "",
        );
    }
    let way = if skew > 0 { "ahead of" } else { "behind" };
    check(
        id,
        CheckStatus::Fail,
        format!(
            "this host's clock is {} s {way} the target's Date",
            skew.abs()
        ),
        "synchronise this host's clock (NTP): token expiry, leases, Retry-After dates and audit times rely on it",
    )
}

#[cfg(test)]
mod tests;
