//! The calls of `doctor`, all of them here, each made once (no retry: a preflight reports what
//! the target does now) with a short time-out, and counted. At most `MAX_CALLS` whatever the
//! org's size: the token, ServiceProviderConfig, one page of users, at most `MAX_ROLE_PAGES`
//! pages of the role catalog, the home division, and with the Authorization path one page of
//! its grants. After a failed token or a target that does not answer, no further call is made.

use super::checks::{Observations, Probe, Reply, RolesProbe, TokenProbe};
use crate::configuration::Settings;
use crate::domain::WriteApi;
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, SystemTime};

/// Pages of 500 roles read at most (2 000 roles; a larger catalog is reported incomplete).
pub(crate) const MAX_ROLE_PAGES: u64 = 4;
const ROLE_PAGE_SIZE: u64 = 500;
/// The most calls one run makes: token, ServiceProviderConfig, users, the catalog's pages,
/// home division, grants.
pub(crate) const MAX_CALLS: u64 = 3 + MAX_ROLE_PAGES + 2;
// The promise of `doctor`: a handful of calls for any org size, checked when compiling.
const _: () = assert!(MAX_CALLS <= 10);

/// The longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Caller {
    http: reqwest::Client,
    calls: u32,
}

impl Caller {
    async fn send(&mut self, req: reqwest::RequestBuilder) -> Probe {
        self.calls += 1;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Probe::Unreachable(e.without_url().to_string()),
        };
        let received_at = SystemTime::now();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, ratelimit_allowed, date) = (
            resp.status().as_u16(),
            header("inin-ratelimit-allowed"),
            header("date"),
        );
        // A failed body read is an answer without a body: the status still tells.
        let bytes = resp.bytes().await.unwrap_or_default();
        Probe::Answered(Reply {
            status,
            ratelimit_allowed,
            date,
            received_at,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        })
    }

    async fn get(&mut self, url: String, query: &[(&str, String)], token: &SecretString) -> Probe {
        let req = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(token.expose_secret())
            .header(
                reqwest::header::ACCEPT,
                "application/scim+json, application/json",
            );
        self.send(req).await
    }
}

/// Makes the calls and returns what they answered.
pub(crate) async fn observe(settings: &Settings) -> Observations {
    let t = &settings.target;
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT.min(Duration::from_secs(t.timeout_secs.max(1))))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("rolesync-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    let mut caller = Caller { http, calls: 0 };
    let mut o = Observations {
        token: TokenProbe::Static,
        service_provider_config: None,
        users: None,
        roles: None,
        home_division: None,
        grants: None,
        calls: 0,
    };
    let token = match (
        &t.bearer_token,
        &t.client_id,
        &t.client_secret,
        &t.token_url,
    ) {
        (Some(tok), _, _, _) => Some(tok.clone()),
        (None, Some(id), Some(secret), Some(url)) => {
            let req = caller
                .http
                .post(url)
                .basic_auth(id, Some(secret.expose_secret()))
                .form(&[("grant_type", "client_credentials")]);
            let mut probe = caller.send(req).await;
            let token = take_token(&mut probe);
            o.token = TokenProbe::Requested(probe);
            token
        }
        // Settings::load refuses a target without credentials; nothing to call with here.
        _ => None,
    };
    let Some(token) = token else {
        o.calls = caller.calls;
        return o;
    };
    let scim = t.scim_base.trim_end_matches('/');
    let spc = caller
        .get(format!("{scim}/serviceproviderconfig"), &[], &token)
        .await;
    let down = spc.is_down();
    o.service_provider_config = Some(spc);
    if down {
        o.calls = caller.calls;
        return o;
    }
    let users_query = [("count", "1".to_owned()), ("attributes", "id".to_owned())];
    o.users = Some(
        caller
            .get(format!("{scim}/users"), &users_query, &token)
            .await,
    );
    let api = settings.api_base();
    o.roles = Some(read_roles(&mut caller, &api, &token).await);
    let home = caller
        .get(
            format!("{api}/api/v2/authorization/divisions/home"),
            &[],
            &token,
        )
        .await;
    let home_id = match &home {
        Probe::Answered(r) if (200..300).contains(&r.status) => r
            .body
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    o.home_division = Some(home);
    if t.write_api == WriteApi::Authorization
        && let Some(division) = home_id
    {
        let query = [("pageSize", "1".to_owned()), ("pageNumber", "1".to_owned())];
        let url = format!(
            "{api}/api/v2/authorization/divisions/{}/grants",
            urlencoding(&division)
        );
        o.grants = Some(caller.get(url, &query, &token).await);
    }
    o.calls = caller.calls;
    o
}

/// The token of a token answer, blanked out in the answer kept for the checks.
fn take_token(probe: &mut Probe) -> Option<SecretString> {
    let Probe::Answered(r) = probe else {
        return None;
    };
    if !(200..300).contains(&r.status) {
        return None;
    }
    let field = r.body.get_mut("access_token")?;
    let token = field.as_str().filter(|s| !s.is_empty())?.to_owned();
    *field = serde_json::Value::String(String::new());
    Some(SecretString::from(token))
}

/// The catalog, page by page, until its `pageCount` or `MAX_ROLE_PAGES`.
async fn read_roles(caller: &mut Caller, api: &str, token: &SecretString) -> RolesProbe {
    let mut roles = RolesProbe::default();
    for page in 1..=MAX_ROLE_PAGES {
        let query = [
            ("pageSize", ROLE_PAGE_SIZE.to_string()),
            ("pageNumber", page.to_string()),
        ];
        let probe = caller
            .get(format!("{api}/api/v2/authorization/roles"), &query, token)
            .await;
        let mut last = true;
        if let Probe::Answered(r) = &probe
            && (200..300).contains(&r.status)
        {
            let entities = r
                .body
                .get("entities")
                .and_then(serde_json::Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            roles.names.extend(
                entities
                    .iter()
                    .filter_map(|e| e.get("name").and_then(serde_json::Value::as_str))
                    .map(str::to_owned),
            );
            let page_count = r
                .body
                .get("pageCount")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(page);
            roles.complete = entities.is_empty() || page >= page_count;
            last = roles.complete;
        }
        roles.pages.push(probe);
        if last {
            break;
        }
    }
    roles
}

/// Percent-encodes a path segment.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
