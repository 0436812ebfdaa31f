//! The sequence of `sandbox-check`'s calls, and the restore of the test user. Each probe's
//! answer goes to a pure judgement (`assumptions`, `audit`); a probe without an answer stops the
//! sequence (the remaining assumptions are then not testable), and the restore runs anyway. The
//! audit trail's probes are in `probes/audit.rs`.

mod audit;

use super::assumptions::{self as judge, AssumptionId, Finding, Verdict, roles_of};
use super::http::{self, Caller, Exchange, NoAnswer, enc};
use super::redact::Redactor;
use super::report::{Options, Report, Restore, RestoreStatus};
use crate::configuration::Settings;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::future::Future;
use std::io::Write;
use std::time::Duration;

const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Pages of 500 division grants read at most when looking for the test grant.
const MAX_GRANT_PAGES: u64 = 4;
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const EMPLOYEE: &str = "Employee";

/// The test user as recorded before the first write: what the restore puts back.
#[derive(Debug, Clone)]
struct Recorded {
    id: String,
    active: bool,
    roles: Vec<String>,
}

struct Ctx {
    caller: Option<Caller>,
    scim_prefix: String,
    api_prefix: String,
    redactor: Redactor,
    findings: Vec<Finding>,
    recorded: Option<Recorded>,
    /// Set just before the first write is sent: from then on the restore must run.
    written: bool,
    test_role: Option<String>,
    token_calls: u32,
    test_user: String,
    audit: audit::AuditState,
}

pub(super) async fn run(
    settings: &Settings,
    options: &Options,
    interrupt: impl Future<Output = ()>,
) -> Report {
    let mut ctx = Ctx {
        caller: None,
        scim_prefix: String::new(),
        api_prefix: String::new(),
        redactor: Redactor::new(),
        findings: Vec::new(),
        recorded: None,
        written: false,
        test_role: None,
        token_calls: 0,
        test_user: options.test_user.clone(),
        audit: audit::AuditState::default(),
    };
    ctx.redactor.know(&options.test_user, "<external-id-1>");
    // Its encoded form too: it appears so in the lookup's query string.
    ctx.redactor
        .know(&enc(&options.test_user), "<external-id-1>");
    let mut interrupted = false;
    let stopped = {
        let probes = ctx.probes(settings, options);
        tokio::select! {
            result = probes => result.err(),
            () = interrupt => {
                interrupted = true;
                Some("interrupted (Ctrl-C or SIGTERM); the test user was restored before exiting".to_owned())
            }
        }
    };
    let restore = ctx.restore(settings).await;
    // Every assumption has a line, in the fixed order; those not reached are not testable.
    let mut assumptions = Vec::new();
    for id in AssumptionId::ALL {
        let found = ctx.findings.iter().find(|f| f.id == id).cloned();
        assumptions.push(found.unwrap_or_else(|| {
            let why = stopped.as_deref().unwrap_or("not reached");
            Finding::new(id, Verdict::NotTestable, format!("not reached: {why}"))
        }));
    }
    let trace = ctx.write_trace(&options.trace);
    let calls = ctx.token_calls + ctx.caller.as_ref().map_or(0, |c| c.calls);
    Report {
        test_user: options.test_user.clone(),
        test_role: ctx.test_role.clone(),
        assumptions,
        stopped: match (&stopped, trace) {
            (s, Ok(())) => s.clone(),
            (Some(s), Err(e)) => Some(format!("{s}; {e}")),
            (None, Err(e)) => Some(e),
        },
        interrupted,
        restore,
        calls,
        trace: options.trace.display().to_string(),
    }
}

/// The path of a URL (without a trailing slash) and its origin.
fn split_url(url: &str) -> Result<(String, String), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    Ok((
        parsed.origin().ascii_serialization(),
        parsed.path().trim_end_matches('/').to_owned(),
    ))
}

impl Ctx {
    fn caller(&mut self) -> Result<&mut Caller, String> {
        self.caller
            .as_mut()
            .ok_or_else(|| "no token: nothing was called".to_owned())
    }

    async fn scim(
        &mut self,
        method: Method,
        route: &'static str,
        rel: &str,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> Result<Exchange, String> {
        let path = format!("{}{rel}", self.scim_prefix);
        self.caller()?
            .call(method, route, path, if_match, body)
            .await
            .map_err(|e: NoAnswer| format!("{route}: {e}"))
    }

    async fn api(
        &mut self,
        method: Method,
        route: &'static str,
        rel: &str,
        body: Option<Value>,
    ) -> Result<Exchange, String> {
        let path = format!("{}{rel}", self.api_prefix);
        self.caller()?
            .call(method, route, path, None, body)
            .await
            .map_err(|e: NoAnswer| format!("{route}: {e}"))
    }

    async fn get_user(&mut self, id: &str) -> Result<Exchange, String> {
        self.scim(
            Method::GET,
            "/users/{id}",
            &format!("/users/{}", enc(id)),
            None,
            None,
        )
        .await
    }

    /// A PATCH of the test user; the roles after it (from the answer, or read when the answer
    /// has no body, as RFC 7644's 204).
    async fn patch(
        &mut self,
        id: &str,
        ops: Value,
        if_match: Option<&str>,
    ) -> Result<(Exchange, Vec<String>), String> {
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        self.written = true;
        let answer = self
            .scim(
                Method::PATCH,
                "/users/{id}",
                &format!("/users/{}", enc(id)),
                if_match,
                Some(body),
            )
            .await?;
        let roles = if answer.body.get("roles").is_some() {
            roles_of(&answer.body)
        } else {
            roles_of(&self.get_user(id).await?.body)
        };
        Ok((answer, roles))
    }

    async fn current_version(&mut self, id: &str) -> Result<Option<String>, String> {
        Ok(self.get_user(id).await?.seen().etag)
    }

    async fn token(
        &mut self,
        settings: &Settings,
        http: &reqwest::Client,
    ) -> Result<SecretString, String> {
        let t = &settings.target;
        match (
            &t.bearer_token,
            &t.client_id,
            &t.client_secret,
            &t.token_url,
        ) {
            (Some(tok), _, _, _) => Ok(tok.clone()),
            (None, Some(id), Some(secret), Some(url)) => {
                self.token_calls += 1;
                let resp = http
                    .post(url)
                    .basic_auth(id, Some(secret.expose_secret()))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .map_err(|e| format!("token: no answer: {}", e.without_url()))?;
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                body.get("access_token")
                    .and_then(Value::as_str)
                    .filter(|s| status.is_success() && !s.is_empty())
                    .map(|s| SecretString::from(s.to_owned()))
                    .ok_or_else(|| {
                        format!("token refused: {status} (check client_id and client_secret)")
                    })
            }
            _ => Err("no credentials in [target]".to_owned()),
        }
    }

    async fn probes(&mut self, settings: &Settings, options: &Options) -> Result<(), String> {
        let (scim_origin, scim_prefix) = split_url(&settings.target.scim_base)?;
        let (api_origin, api_prefix) = split_url(&settings.api_base())?;
        if scim_origin != api_origin {
            return Err(format!(
                "target.scim_base ({scim_origin}) and the Platform API ({api_origin}) are on different hosts; sandbox-check needs one"
            ));
        }
        self.scim_prefix = scim_prefix;
        self.api_prefix = api_prefix;
        let client = http::client(CALL_TIMEOUT);
        let token = self.token(settings, &client).await?;
        self.caller = Some(Caller::new(client, token, scim_origin, 0));

        // Setup: reads only.
        let spc = self
            .scim(
                Method::GET,
                "/serviceproviderconfig",
                "/serviceproviderconfig",
                None,
                None,
            )
            .await?;
        let max_results = spc
            .body
            .pointer("/filter/maxResults")
            .and_then(Value::as_u64);
        let catalog = self
            .api(
                Method::GET,
                "/api/v2/authorization/roles",
                "/api/v2/authorization/roles?pageSize=500&pageNumber=1",
                None,
            )
            .await?;
        let roles: Vec<(String, String)> = catalog
            .body
            .get("entities")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                Some((
                    e.get("id")?.as_str()?.to_owned(),
                    e.get("name")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        for (id, name) in &roles {
            self.redactor.role(id, name);
        }
        let home = self
            .api(
                Method::GET,
                "/api/v2/authorization/divisions/home",
                "/api/v2/authorization/divisions/home",
                None,
            )
            .await?;
        let home_id = home
            .body
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(h) = &home_id {
            self.redactor.know(h, "<division-home>");
        }
        let filter = format!(
            "externalId eq \"{}\"",
            options.test_user.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let found = self
            .scim(
                Method::GET,
                "/users",
                &format!("/users?filter={}", enc(&filter)),
                None,
                None,
            )
            .await?;
        let resources = found
            .body
            .get("Resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let [user] = resources.as_slice() else {
            return Err(format!(
                "the test user: {} users have externalId {:?} ({}); exactly one is needed",
                resources.len(),
                options.test_user,
                found.seen().summary()
            ));
        };
        let id = user
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or("the test user has no id")?;
        self.redactor.know(&id, "<user-1>");
        for (key, placeholder) in [("userName", "<email-1>"), ("displayName", "<name-1>")] {
            if let Some(v) = user.get(key).and_then(Value::as_str) {
                self.redactor.know(v, placeholder);
            }
        }
        let before = self.get_user(&id).await?;
        if !before.seen().ok() {
            return Err(format!("GET the test user: {}", before.seen().summary()));
        }
        let recorded = Recorded {
            id: id.clone(),
            active: before
                .body
                .get("active")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            roles: roles_of(&before.body),
        };
        self.recorded = Some(recorded.clone());
        let role = match &options.test_role {
            Some(r)
                if roles.iter().any(|(_, n)| n == r)
                    && !recorded.roles.contains(r)
                    && r != EMPLOYEE =>
            {
                r.clone()
            }
            Some(r) => {
                return Err(format!(
                    "--test-role {r}: not in the catalog's first page, Employee, or already held by the test user"
                ));
            }
            None => {
                let mut names: Vec<&String> = roles.iter().map(|(_, n)| n).collect();
                names.sort();
                names
                    .into_iter()
                    .find(|n| *n != EMPLOYEE && !recorded.roles.contains(n))
                    .cloned()
                    .ok_or("no role the test user lacks in the catalog: pass --test-role")?
            }
        };
        self.test_role = Some(role.clone());
        let role_id = roles
            .iter()
            .find(|(_, n)| *n == role)
            .map(|(i, _)| i.clone())
            .unwrap_or_default();
        // The audit trail before the first write: the permission, and what is there already.
        self.audit_before(&id).await?;

        // SCIM: If-Match, Employee.
        let v0 = before.seen().etag;
        let without_employee: Vec<Value> = recorded
            .roles
            .iter()
            .filter(|r| *r != EMPLOYEE)
            .chain(std::iter::once(&role))
            .map(|r| json!({"value": r}))
            .collect();
        let replace = json!([{"op": "replace", "path": "roles", "value": without_employee}]);
        let (first, after_first) = self.patch(&id, replace, v0.as_deref()).await?;
        // Whether the test role was held, as read after each write that may change it (it was
        // not before the first): the changes the audit trail must show.
        let mut held = vec![false, after_first.contains(&role)];
        self.findings
            .push(judge::if_match_accepted(v0.as_deref(), &first.seen()));
        self.findings
            .push(judge::employee_kept_on_replace(&first.seen(), &after_first));
        let v1 = self.current_version(&id).await?;
        let back: Vec<Value> = recorded.roles.iter().map(|r| json!({"value": r})).collect();
        let stale_ops = json!([{"op": "replace", "path": "roles", "value": back}]);
        let (stale, _) = self.patch(&id, stale_ops, v0.as_deref()).await?;
        let v2 = self.current_version(&id).await?;
        self.findings.push(judge::stale_if_match_refused(
            &stale.seen(),
            v1.is_some() && v1 == v2,
        ));
        let remove_employee = json!([{"op": "remove", "path": "roles[value eq \"Employee\"]"}]);
        let (removal, after_removal) = self.patch(&id, remove_employee, v2.as_deref()).await?;
        held.push(after_removal.contains(&role));
        self.findings.push(judge::employee_removal_ignored(
            &removal.seen(),
            &after_removal,
        ));

        // The unfiltered listing with the test user active, then inactive (or the reverse).
        let total = |e: &Exchange| e.body.get("totalResults").and_then(Value::as_u64);
        let first_total = total(
            &self
                .scim(Method::GET, "/users", "/users?count=0", None, None)
                .await?,
        );
        let v = self.current_version(&id).await?;
        let flip = json!([{"op": "replace", "path": "active", "value": !recorded.active}]);
        self.patch(&id, flip, v.as_deref()).await?;
        let second_total = total(
            &self
                .scim(Method::GET, "/users", "/users?count=0", None, None)
                .await?,
        );
        let v = self.current_version(&id).await?;
        let unflip = json!([{"op": "replace", "path": "active", "value": recorded.active}]);
        self.patch(&id, unflip, v.as_deref()).await?;
        let (active_total, inactive_total) = if recorded.active {
            (first_total, second_total)
        } else {
            (second_total, first_total)
        };
        self.findings
            .push(judge::inactive_hidden(active_total, inactive_total));

        // Page sizes: reads of the directory.
        let over = self
            .scim(Method::GET, "/users", "/users?count=26", None, None)
            .await?;
        self.findings.push(judge::page_size_rule(&over.seen()));
        let page = match max_results {
            Some(max) => Some(
                self.scim(
                    Method::GET,
                    "/users",
                    &format!("/users?count={max}&attributes=id"),
                    None,
                    None,
                )
                .await?
                .seen(),
            ),
            None => None,
        };
        self.findings
            .push(judge::max_results_page(max_results, page.as_ref()));

        // Authorization: the test role is held now (the first PATCH granted it).
        let Some(home_id) = home_id else {
            return Err(format!(
                "GET divisions/home: {} (no id)",
                home.seen().summary()
            ));
        };
        let remove_path = format!("/api/v2/authorization/roles/{}/users/remove", enc(&role_id));
        let remove_route = "/api/v2/authorization/roles/{roleId}/users/remove";
        self.written = true;
        let removed = self
            .api(Method::PUT, remove_route, &remove_path, Some(json!([id])))
            .await?;
        let after = roles_of(&self.get_user(&id).await?.body);
        held.push(after.contains(&role));
        self.findings
            .push(judge::remove_clears(&removed.seen(), &role, &after));
        let n = settings.target.bulk_max_subjects.max(1);
        let padded = json!(vec![id.clone(); n]);
        let cap = self
            .api(Method::PUT, remove_route, &remove_path, Some(padded))
            .await?;
        self.findings.push(judge::bulk_cap(n, &cap.seen()));
        let grant_body = json!({"subjectIds": [id], "divisionIds": [home_id]});
        let grant = self
            .api(
                Method::POST,
                "/api/v2/authorization/roles/{roleId}",
                &format!(
                    "/api/v2/authorization/roles/{}?subjectType=PC_USER",
                    enc(&role_id)
                ),
                Some(grant_body),
            )
            .await?;
        let after = roles_of(&self.get_user(&id).await?.body);
        held.push(after.contains(&role));
        self.findings
            .push(judge::grant_shows(&grant.seen(), &role, &after));
        let mut pages = Vec::new();
        let mut found = None;
        for p in 1..=MAX_GRANT_PAGES {
            let listing = self
                .api(
                    Method::GET,
                    "/api/v2/authorization/divisions/{divisionId}/grants",
                    &format!(
                        "/api/v2/authorization/divisions/{}/grants?pageSize=500&pageNumber={p}",
                        enc(&home_id)
                    ),
                    None,
                )
                .await?;
            let entities = listing
                .body
                .get("entities")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let page_count = listing
                .body
                .get("pageCount")
                .and_then(Value::as_u64)
                .unwrap_or(p);
            pages.push(listing.seen());
            if entities.iter().any(|g| {
                g.get("subjectId").and_then(Value::as_str) == Some(id.as_str())
                    && g.pointer("/role/id").and_then(Value::as_str) == Some(role_id.as_str())
            }) {
                found = Some(true);
                break;
            }
            if !listing.seen().ok() {
                break;
            }
            if p >= page_count || entities.is_empty() {
                found = Some(false);
                break;
            }
        }
        self.findings.push(judge::grant_in_home(found, &pages));
        let random = uuid::Uuid::new_v4().to_string();
        self.redactor.know(&random, "<unknown-id-1>");
        let refusal = self
            .api(
                Method::PUT,
                remove_route,
                &remove_path,
                Some(json!([id, random])),
            )
            .await?;
        let still = roles_of(&self.get_user(&id).await?.body).contains(&role);
        held.push(still);
        self.findings.push(judge::bad_id(&refusal.seen(), still));
        self.findings.push(judge::no_per_subject(
            &grant.seen(),
            &removed.seen(),
            &refusal.seen(),
            &random,
        ));
        self.findings.extend(judge::untestable());
        // The audit trail of those changes, and one more (the last): README, Drift.
        let changes = held.windows(2).filter(|w| w[0] != w[1]).count();
        self.audit_after(settings, &id, (&role_id, &role), &home_id, (changes, still))
            .await
    }

    /// Puts the test user back as recorded: `active` first (a reactivation may drop roles),
    /// then `roles`, each with the current version in If-Match, then reads it back.
    async fn restore(&mut self, settings: &Settings) -> Restore {
        let Some(rec) = self.recorded.clone() else {
            return Restore {
                status: RestoreStatus::NotNeeded,
                recorded: None,
                fix: String::new(),
            };
        };
        let recorded = json!({"active": rec.active, "roles": rec.roles});
        if !self.written {
            return Restore {
                status: RestoreStatus::NotNeeded,
                recorded: Some(recorded),
                fix: String::new(),
            };
        }
        let mut last = String::new();
        for _ in 0..3 {
            match self.restore_once(&rec).await {
                Ok(true) => {
                    return Restore {
                        status: RestoreStatus::Restored,
                        recorded: Some(recorded),
                        fix: String::new(),
                    };
                }
                Ok(false) => last = "read back, it still differs".to_owned(),
                Err(e) => last = e,
            }
        }
        let scim = settings.target.scim_base.trim_end_matches('/');
        let fix = format!(
            "The restore failed ({last}). Set the user {} (externalId {}) by hand to active = {} and roles = [{}] \
             (Admin > People > the user > Roles), or send: PATCH {scim}/users/{} with \
             {{\"schemas\":[\"{PATCH_OP}\"],\"Operations\":[{{\"op\":\"replace\",\"path\":\"active\",\"value\":{}}},{{\"op\":\"replace\",\"path\":\"roles\",\"value\":{}}}]}}",
            rec.id,
            self.test_user,
            rec.active,
            rec.roles.join(", "),
            rec.id,
            rec.active,
            json!(
                rec.roles
                    .iter()
                    .map(|r| json!({"value": r}))
                    .collect::<Vec<_>>()
            ),
        );
        Restore {
            status: RestoreStatus::Failed,
            recorded: Some(recorded),
            fix,
        }
    }

    /// One attempt: true when the user reads back as recorded.
    async fn restore_once(&mut self, rec: &Recorded) -> Result<bool, String> {
        let now = self.get_user(&rec.id).await?;
        if !now.seen().ok() {
            return Err(format!("GET the test user: {}", now.seen().summary()));
        }
        let mut version = now.seen().etag;
        if now.body.get("active").and_then(Value::as_bool) != Some(rec.active) {
            let ops = json!([{"op": "replace", "path": "active", "value": rec.active}]);
            let (answer, _) = self.patch(&rec.id, ops, version.as_deref()).await?;
            if !answer.seen().ok() {
                return Err(format!("PATCH active: {}", answer.seen().summary()));
            }
            version = self.current_version(&rec.id).await?;
        }
        let now = self.get_user(&rec.id).await?;
        if roles_of(&now.body) != rec.roles {
            let value: Vec<Value> = rec.roles.iter().map(|r| json!({"value": r})).collect();
            let ops = json!([{"op": "replace", "path": "roles", "value": value}]);
            let version = now.seen().etag.or(version);
            let (answer, _) = self.patch(&rec.id, ops, version.as_deref()).await?;
            if !answer.seen().ok() {
                return Err(format!("PATCH roles: {}", answer.seen().summary()));
            }
        }
        let check = self.get_user(&rec.id).await?;
        Ok(
            check.body.get("active").and_then(Value::as_bool) == Some(rec.active)
                && roles_of(&check.body) == rec.roles,
        )
    }

    /// Writes the redacted trace, one exchange a line.
    fn write_trace(&mut self, path: &std::path::Path) -> Result<(), String> {
        let exchanges = self
            .caller
            .as_ref()
            .map(|c| c.exchanges.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for (i, e) in exchanges.iter().enumerate() {
            let line = e.trace_line(i + 1, &mut self.redactor);
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(&out))
            .map_err(|e| format!("cannot write the trace {}: {e}", path.display()))
    }
}
