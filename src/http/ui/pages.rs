//! The console's pages, rendered from the same views the API answers with (`http::views`) and
//! the policy in force, so every number on a page is the number the API gives. Pure: no I/O.
//! Cells that carry an API figure have `data-field` set to its JSON path, for the browser test.

use super::html::Html;
use crate::domain::JobStatus;
use crate::http::views::{ItemView, JobView};
use crate::policy::Policy;

/// A whole page: head, navigation (when signed in) and `body`; `refresh` reloads it every so
/// many seconds (a job still going), with no script.
pub fn page(title: &str, signed_in_as: Option<&str>, refresh: Option<u32>, body: Html) -> String {
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(secs) = refresh {
        h.raw("<meta http-equiv=\"refresh\" content=\"")
            .text(secs)
            .raw("\">");
    }
    h.raw("<title>")
        .text(title)
        .raw(" · rolesync</title><link rel=\"stylesheet\" href=\"/ui/console.css\">")
        .raw("</head><body><header><strong>rolesync</strong>");
    if let Some(name) = signed_in_as {
        h.raw(" <nav><a href=\"/ui/jobs\">Jobs</a> <a href=\"/ui/policy\">Policy</a></nav>")
            .raw("<form method=\"post\" action=\"/ui/logout\" class=\"signout\"><span id=\"signed-in-as\">")
            .text(name)
            .raw("</span> <button type=\"submit\">Sign out</button></form>");
    }
    h.raw("</header><main><h1>")
        .text(title)
        .raw("</h1>")
        .append(body)
        .raw("</main></body></html>");
    h.into_string()
}

/// How a person may sign in: the company's provider (`oidc`), an API key (`key_form`).
#[derive(Debug, Clone, Copy)]
pub struct SignInWays {
    pub oidc: bool,
    pub key_form: bool,
}

/// The sign-in page, with why the last attempt failed.
pub fn login(message: Option<&str>, ways: SignInWays) -> Html {
    let mut h = Html::new();
    if let Some(m) = message {
        h.raw("<p class=\"err\" role=\"alert\">")
            .text(m)
            .raw("</p>");
    }
    if ways.oidc {
        h.raw("<p><a id=\"oidc-sign-in\" class=\"button\" href=\"/ui/oidc/start\">Sign in with your company account</a></p>");
    }
    if ways.key_form {
        h.raw("<form method=\"post\" action=\"/ui/login\">")
            .raw("<label>API key <input type=\"password\" name=\"key\" autocomplete=\"off\" required autofocus></label> ")
            .raw("<button type=\"submit\">Sign in</button></form>")
            .raw("<p class=\"muted\">Any API key with the <code>jobs:read</code> scope. The console only reads.</p>");
    } else {
        h.raw("<p class=\"muted\">Signing in with an API key is turned off (auth.console.api_key_sign_in).</p>");
    }
    h
}

/// A message page (errors).
pub fn message(text: &str) -> Html {
    let mut h = Html::new();
    h.raw("<p class=\"err\">").text(text).raw("</p>");
    h
}

/// Rows done out of the total (anything no longer pending).
fn done(job: &JobView) -> i64 {
    job.counts.total - job.counts.pending
}

/// Seconds left for a job that is still going: from its measured pace once it has one, else the
/// plan's estimate. None once the job is over.
pub fn eta_secs(job: &JobView) -> Option<i64> {
    if job.status.is_terminal() {
        return None;
    }
    if job.rows_per_sec > 0.0 && job.counts.pending > 0 {
        return Some((job.counts.pending as f64 / job.rows_per_sec).ceil() as i64);
    }
    job.estimate.as_ref().map(|e| e.eta_secs)
}

/// `1h 02m 03s`, `4m 05s`, `6s`.
pub fn duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn progress(h: &mut Html, job: &JobView) {
    h.raw("<progress max=\"")
        .text(job.counts.total.max(1))
        .raw("\" value=\"")
        .text(done(job))
        .raw("\"></progress> ")
        .text(done(job))
        .raw("/")
        .text(job.counts.total);
}

fn status_cell(h: &mut Html, status: JobStatus) {
    h.raw("<td data-field=\"status\">")
        .text(status)
        .raw("</td>");
}

fn num(h: &mut Html, field: &'static str, value: impl std::fmt::Display) {
    h.raw("<td class=\"n\" data-field=\"")
        .raw(field)
        .raw("\">")
        .text(value)
        .raw("</td>");
}

fn opt(h: &mut Html, value: Option<&str>) {
    match value {
        Some(v) => h.text(v),
        None => h.raw("—"),
    };
}

/// `/ui/jobs`: newest first, one page, with a link to the next.
pub fn jobs(jobs: &[JobView], next_cursor: Option<&str>) -> Html {
    let mut h = Html::new();
    if jobs.is_empty() {
        h.raw("<p>No jobs.</p>");
        return h;
    }
    h.raw(
        "<table id=\"jobs\"><thead><tr><th>Job</th><th>Status</th><th>Mode</th><th>Progress</th>",
    )
    .raw("<th>Rows</th><th>Applied</th><th>Unchanged</th><th>Rejected</th><th>Not found</th>")
    .raw("<th>Failed</th><th>Cancelled</th><th>Pending</th><th>Rows/s</th><th>ETA</th>")
    .raw("<th>Created</th><th>Finished</th><th>Submitted by</th></tr></thead><tbody>");
    for j in jobs {
        h.raw("<tr data-job=\"")
            .text(&j.job_id)
            .raw("\"><td><a href=\"/ui/jobs/")
            .text(&j.job_id)
            .raw("\"><code>")
            .text(&j.job_id)
            .raw("</code></a></td>");
        status_cell(&mut h, j.status);
        h.raw("<td>").text(j.mode);
        if j.dry_run {
            h.raw(" (dry run)");
        }
        h.raw("</td><td>");
        progress(&mut h, j);
        h.raw("</td>");
        num(&mut h, "counts.total", j.counts.total);
        num(&mut h, "counts.applied", j.counts.applied);
        num(&mut h, "counts.unchanged", j.counts.unchanged);
        num(&mut h, "counts.rejected", j.counts.rejected);
        num(&mut h, "counts.not_found", j.counts.not_found);
        num(&mut h, "counts.failed", j.counts.failed);
        num(&mut h, "counts.cancelled", j.counts.cancelled);
        num(&mut h, "counts.pending", j.counts.pending);
        num(&mut h, "rows_per_sec", j.rows_per_sec);
        h.raw("<td>");
        opt(&mut h, eta_secs(j).map(duration).as_deref());
        h.raw("</td><td>");
        opt(&mut h, j.created_at.as_deref());
        h.raw("</td><td>");
        opt(&mut h, j.finished_at.as_deref());
        h.raw("</td><td data-field=\"submitted_by\">");
        opt(
            &mut h,
            j.submitted_by.as_ref().map(|p| p.label()).as_deref(),
        );
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    if let Some(c) = next_cursor {
        h.raw("<p><a id=\"older\" href=\"/ui/jobs?cursor=")
            .text(c)
            .raw("\">Older jobs →</a></p>");
    }
    h
}

/// What `/ui/jobs/{id}` shows besides the job: one page of its rejected rows.
pub struct RejectedPage<'a> {
    pub items: &'a [ItemView],
    /// Whether this is the first page (else it links back to it).
    pub first_page: bool,
    /// The line after which the next page starts, if there is one.
    pub next_after: Option<i64>,
}

/// `/ui/jobs/{id}`. `requests_per_minute` is the limit rolesync holds itself to against the
/// target (`target.requests_per_minute`).
pub fn job(j: &JobView, rejected: RejectedPage<'_>, requests_per_minute: u32) -> Html {
    let mut h = Html::new();
    h.raw("<table id=\"summary\"><tbody><tr><th>Status</th>");
    status_cell(&mut h, j.status);
    h.raw("</tr><tr><th>Mode</th><td data-field=\"mode\">")
        .text(j.mode)
        .raw("</td></tr><tr><th>Dry run</th><td data-field=\"dry_run\">")
        .text(j.dry_run)
        .raw("</td></tr><tr><th>Progress</th><td>");
    progress(&mut h, j);
    h.raw("</td></tr><tr><th>ETA</th><td>");
    opt(&mut h, eta_secs(j).map(duration).as_deref());
    h.raw("</td></tr><tr><th>Created</th><td>");
    opt(&mut h, j.created_at.as_deref());
    h.raw("</td></tr><tr><th>Started</th><td>");
    opt(&mut h, j.started_at.as_deref());
    h.raw("</td></tr><tr><th>Finished</th><td>");
    opt(&mut h, j.finished_at.as_deref());
    h.raw("</td></tr><tr><th>Elapsed</th><td>")
        .text(duration(j.elapsed_secs.round() as i64))
        .raw("</td></tr><tr><th>Paused because</th><td data-field=\"paused_reason\">");
    opt(&mut h, j.paused_reason.map(|r| r.as_str()));
    // The target's rate limit holds the calls (`waiting`): why and until when.
    h.raw("</td></tr><tr><th>Waiting</th><td data-field=\"waiting\">");
    match &j.waiting {
        Some(w) => {
            h.raw("<span data-field=\"waiting.reason\">")
                .text(w.reason.as_str())
                .raw("</span>: the target's rate limit holds calls until <span data-field=\"waiting.until\">")
                .text(&w.until)
                .raw("</span>");
        }
        None => opt(&mut h, None),
    }
    h.raw("</td></tr>");
    if let Some(e) = &j.error {
        h.raw("<tr><th>Error</th><td class=\"err\">")
            .text(e)
            .raw("</td></tr>");
    }
    // Who did what: the principal of each act (`Principal::label`).
    for (label, field, who) in [
        ("Submitted by", "submitted_by", &j.submitted_by),
        ("Approved by", "approved_by", &j.approved_by),
        ("Cancelled by", "cancelled_by", &j.cancelled_by),
    ] {
        h.raw("<tr><th>")
            .raw(label)
            .raw("</th><td data-field=\"")
            .raw(field)
            .raw("\">");
        opt(&mut h, who.as_ref().map(|p| p.label()).as_deref());
        h.raw("</td></tr>");
    }
    h.raw("<tr><th>Policy</th><td><code>");
    opt(&mut h, j.policy_fingerprint.as_deref());
    h.raw("</code></td></tr></tbody></table>");

    h.raw("<h2>Rows</h2><table id=\"counts\"><thead><tr><th>Total</th><th>Applied</th>")
        .raw("<th>Unchanged</th><th>Rejected</th><th>Not found</th><th>Failed</th><th>Cancelled</th>")
        .raw("<th>Planned</th><th>Pending</th><th>Awaiting account (users)</th><th>Scheduled</th><th>Rows/s</th></tr></thead><tbody><tr>");
    num(&mut h, "counts.total", j.counts.total);
    num(&mut h, "counts.applied", j.counts.applied);
    num(&mut h, "counts.unchanged", j.counts.unchanged);
    num(&mut h, "counts.rejected", j.counts.rejected);
    num(&mut h, "counts.not_found", j.counts.not_found);
    num(&mut h, "counts.failed", j.counts.failed);
    num(&mut h, "counts.cancelled", j.counts.cancelled);
    num(&mut h, "counts.planned", j.counts.planned);
    num(&mut h, "counts.pending", j.counts.pending);
    // Joiners whose account is not in the target yet (`sync.await_user_secs`): among pending.
    num(&mut h, "counts.awaiting_user", j.counts.awaiting_user);
    // Rows dated later (`effective_at`), held until then: among pending.
    num(&mut h, "counts.scheduled", j.counts.scheduled);
    num(&mut h, "rows_per_sec", j.rows_per_sec);
    h.raw("</tr></tbody></table>");

    h.raw("<h2>Users</h2><table id=\"users\"><thead><tr><th>Total</th><th>Changed</th><th>Unchanged</th></tr></thead><tbody><tr>");
    num(&mut h, "users.total", j.users.total);
    num(&mut h, "users.changed", j.users.changed);
    num(&mut h, "users.unchanged", j.users.unchanged);
    h.raw("</tr></tbody></table>");

    // Calls against the limits: the calls made beside the plan's (reads, and one write per user
    // at most), and the average rate so far beside the ceiling rolesync holds to.
    let per_minute = if j.elapsed_secs > 0.0 {
        (j.scim.requests as f64 / j.elapsed_secs * 60.0).round() as i64
    } else {
        0
    };
    h.raw("<h2>SCIM calls</h2><table id=\"scim\"><thead><tr><th>Requests</th><th>Planned (at most)</th>")
        .raw("<th>Retries</th><th>Rate limited (429)</th><th>Average per minute</th><th>Limit per minute</th></tr></thead><tbody><tr>");
    num(&mut h, "scim.requests", j.scim.requests);
    h.raw("<td class=\"n\">");
    opt(
        &mut h,
        j.estimate
            .as_ref()
            .map(|e| (e.reads + e.writes_max).to_string())
            .as_deref(),
    );
    h.raw("</td>");
    num(&mut h, "scim.retries", j.scim.retries);
    num(&mut h, "scim.rate_limited", j.scim.rate_limited);
    num(&mut h, "scim.per_minute", per_minute);
    num(&mut h, "target.requests_per_minute", requests_per_minute);
    h.raw("</tr></tbody></table>");

    h.raw("<h2>Estimate</h2>");
    match &j.estimate {
        None => {
            h.raw("<p class=\"muted\">Not planned yet.</p>");
        }
        Some(e) => {
            h.raw("<table id=\"estimate\"><thead><tr><th>Strategy</th><th>Reads</th><th>Lookups</th>")
                .raw("<th>Writes (max)</th><th>ETA at the limit</th><th>Users in the org</th><th>Limit per minute</th></tr></thead><tbody><tr>")
                .raw("<td data-field=\"estimate.strategy\">")
                .text(e.strategy)
                .raw("</td>");
            num(&mut h, "estimate.reads", e.reads);
            num(&mut h, "estimate.lookups", e.lookups);
            num(&mut h, "estimate.writes_max", e.writes_max);
            h.raw("<td>")
                .text(duration(e.eta_secs))
                .raw("</td><td class=\"n\">");
            opt(&mut h, e.org_users.map(|n| n.to_string()).as_deref());
            h.raw("</td>");
            num(
                &mut h,
                "estimate.requests_per_minute",
                e.requests_per_minute,
            );
            h.raw("</tr></tbody></table>");
            if let Some(p) = &e.privileged {
                h.raw("<p>Grants privileged roles: <code>")
                    .text(serde_json::to_string(p).unwrap_or_default())
                    .raw("</code></p>");
            }
        }
    }

    if let Some(a) = &j.approval {
        h.raw("<h2>Approval</h2><table id=\"approval\"><tbody><tr><th>Required</th><td data-field=\"approval.required\">")
            .text(a.required)
            .raw("</td></tr><tr><th>Because</th><td>");
        let reasons: Vec<&str> = a.reasons.iter().map(|r| r.as_str()).collect();
        h.text(reasons.join(", "))
            .raw("</td></tr><tr><th>Users losing roles</th><td>");
        opt(
            &mut h,
            a.users_losing_roles.map(|n| n.to_string()).as_deref(),
        );
        h.raw("</td></tr><tr><th>Bound (users)</th><td>");
        opt(&mut h, a.threshold_users.map(|n| n.to_string()).as_deref());
        h.raw("</td></tr></tbody></table>");
    }

    h.raw("<h2>Rejected rows</h2><p><a id=\"rejected-csv\" href=\"/ui/jobs/")
        .text(&j.job_id)
        .raw("/rejected.csv\">Download all rejected rows (CSV)</a></p>");
    if rejected.items.is_empty() {
        h.raw("<p class=\"muted\">No rejected rows.</p>");
    } else {
        h.raw("<table id=\"rejected\"><thead><tr><th>Line</th><th>External id</th><th>Role template</th>")
            .raw("<th>License tier</th><th>Reason</th><th>Detail</th></tr></thead><tbody>");
        for i in rejected.items {
            h.raw("<tr><td class=\"n\">")
                .text(i.line)
                .raw("</td><td>")
                .text(&i.external_id)
                .raw("</td><td>")
                .text(&i.role_template)
                .raw("</td><td>")
                .text(&i.license_tier)
                .raw("</td><td>");
            match &i.reason {
                Some(r) => h
                    .raw("<code>")
                    .text(r.code.as_str())
                    .raw("</code></td><td>")
                    .text(&r.message),
                None => h.raw("</td><td>"),
            };
            h.raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    if !rejected.first_page {
        h.raw("<p><a id=\"first-rejected\" href=\"/ui/jobs/")
            .text(&j.job_id)
            .raw("\">← First rejected rows</a></p>");
    }
    if let Some(after) = rejected.next_after {
        h.raw("<p><a id=\"more-rejected\" href=\"/ui/jobs/")
            .text(&j.job_id)
            .raw("?after=")
            .text(after)
            .raw("\">More rejected rows →</a></p>");
    }
    h
}

/// `/ui/policy`: what `GET /v1/policy` says, with each role's ancestors.
pub fn policy(p: &Policy, privileged: &[String]) -> Html {
    let mut h = Html::new();
    h.raw("<p>Fingerprint <code data-field=\"fingerprint\">")
        .text(p.fingerprint())
        .raw("</code>; inherited roles are ")
        .raw(if p.expand_inherited() {
            "pushed with the role (expand_inherited)"
        } else {
            "not pushed (expand_inherited = false)"
        })
        .raw(".</p><p>Protected roles (never removed): ");
    let protected: Vec<&str> = p.protected_roles().iter().map(String::as_str).collect();
    h.text(protected.join(", "))
        .raw("</p><p>Privileged roles (a grant waits for approval): <span data-field=\"privileged_roles\">")
        .text(privileged.join(", "))
        .raw("</span></p>");

    let tiers = p.tiers();
    h.raw("<h2>License tiers <span class=\"muted\" data-field=\"tiers.length\">")
        .text(tiers.len())
        .raw("</span></h2><table id=\"tiers\"><thead><tr><th>Tier</th><th>Roles allowed</th></tr></thead><tbody>");
    for t in tiers {
        let roles: Vec<&str> = t.roles.iter().map(String::as_str).collect();
        h.raw("<tr><td>")
            .text(&t.name)
            .raw("</td><td>")
            .text(roles.join(", "))
            .raw("</td></tr>");
    }
    h.raw("</tbody></table>");

    let roles = p.roles();
    h.raw("<h2>Roles <span class=\"muted\" data-field=\"roles.length\">")
        .text(roles.len())
        .raw("</span></h2><table id=\"roles\"><thead><tr><th>Role</th><th>Inherits</th><th>All ancestors</th><th>Own permissions</th></tr></thead><tbody>");
    for r in roles {
        let ancestors: Vec<String> = p.ancestors(&r.name).into_iter().collect();
        h.raw("<tr><td>")
            .text(&r.name)
            .raw("</td><td>")
            .text(r.inherits.join(", "))
            .raw("</td><td>")
            .text(ancestors.join(", "))
            .raw("</td><td><code>")
            .text(r.permissions.join(" "))
            .raw("</code></td></tr>");
    }
    h.raw("</tbody></table>");

    let sod = p.sod_rules();
    h.raw("<h2>Separation of duties <span class=\"muted\" data-field=\"sod.length\">")
        .text(sod.len())
        .raw("</span></h2><table id=\"sod\"><thead><tr><th>Rule</th><th>Roles never held together</th><th>Why</th></tr></thead><tbody>");
    for s in sod {
        let roles: Vec<&str> = s.roles.iter().map(String::as_str).collect();
        h.raw("<tr><td>")
            .text(&s.name)
            .raw("</td><td>")
            .text(roles.join(" + "))
            .raw("</td><td>")
            .text(&s.reason)
            .raw("</td></tr>");
    }
    h.raw("</tbody></table>");

    let a = p.approval();
    h.raw("<h2>Approval bounds</h2><p>A <code>replace</code> job waits for approval when it would remove roles from more than ")
        .text(a.max_removed_users)
        .raw(" users or more than ")
        .text(a.max_removal_fraction * 100.0)
        .raw("% of the org.</p>");
    h
}

/// The policy against the org, as `policy_vs_org` shows it.
pub enum OrgView {
    Read {
        diff: crate::policy::org::OrgDiff,
        read_at: std::time::SystemTime,
    },
    /// The catalog could not be read: why.
    Unreadable(String),
}

/// The roles of the policy the org lacks (rows needing them are rejected at planning) and the
/// org's roles the policy does not manage.
pub fn policy_vs_org(v: &OrgView) -> Html {
    let mut h = Html::new();
    h.raw("<h2>Policy and the org</h2>");
    let (diff, read_at) = match v {
        OrgView::Read { diff, read_at } => (diff, read_at),
        OrgView::Unreadable(why) => {
            h.raw("<p class=\"err\" data-field=\"org.error\">The org's role catalog cannot be read (")
                .text(why)
                .raw("): rows are not checked against it, and a role the org lacks fails user by user. <code>rolesync doctor</code> tells why.</p>");
            return h;
        }
    };
    h.raw("<p class=\"muted\">From the org's role catalog read at ")
        .text(httpdate::fmt_http_date(*read_at))
        .raw(" (read again after 10 minutes).</p>");
    h.raw("<p>Policy roles missing from the org (rows needing them are rejected, <code>unknown_target_role</code>): ");
    if diff.missing_from_org.is_empty() {
        h.raw("<span data-field=\"org.missing\">none</span></p>");
    } else {
        h.raw("<span class=\"err\" data-field=\"org.missing\">")
            .text(diff.missing_from_org.join(", "))
            .raw("</span></p>");
    }
    h.raw("<p>Org roles the policy does not manage (never granted nor removed): <span data-field=\"org.unmanaged\">")
        .text(if diff.unmanaged.is_empty() {
            "none".to_owned()
        } else {
            diff.unmanaged.join(", ")
        })
        .raw("</span></p>");
    h
}

/// After a sign-out, on the way to the provider's logout.
pub fn signed_out(provider_logout: &str) -> String {
    let mut body = Html::new();
    body.raw("<p>You are signed out of the console. <a id=\"provider-logout\" href=\"")
        .text(provider_logout)
        .raw("\">Sign out of your company account too</a>.</p>");
    page("Signed out", None, None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(6), "6s");
        assert_eq!(duration(245), "4m 05s");
        assert_eq!(duration(3723), "1h 02m 03s");
    }
}
