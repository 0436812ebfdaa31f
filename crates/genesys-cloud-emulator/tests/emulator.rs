//! The Genesys Cloud emulator over real HTTP: each test starts its own emulator on
//! 127.0.0.1:0 with `genesys_cloud_emulator::spawn`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use genesys_cloud_emulator::{self as emulator, EmulatorArgs, EmulatorHandle, Profile};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SCIM: &str = "/api/v2/scim/v2";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Emu {
    handle: EmulatorHandle,
    client: reqwest::Client,
    token: String,
}

fn args() -> EmulatorArgs {
    EmulatorArgs {
        rate_limit_per_minute: 0,
        ..EmulatorArgs::default()
    }
}

impl Emu {
    async fn start(args: EmulatorArgs) -> Emu {
        let handle = emulator::spawn(args).await.unwrap();
        let client = reqwest::Client::new();
        let mut emu = Emu {
            handle,
            client,
            token: String::new(),
        };
        emu.token = emu.new_token().await;
        emu
    }

    async fn stop(self) {
        self.handle.shutdown().await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url(), path)
    }

    /// `path` with query parameters, percent-encoded.
    fn url_q(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.url(path)).unwrap();
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    async fn token_response(&self, id: &str, secret: &str) -> reqwest::Response {
        self.client
            .post(self.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
    }

    async fn new_token(&self) -> String {
        let res = self
            .token_response("rolesync-dev", "rolesync-dev-secret")
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["token_type"], "bearer");
        body["access_token"].as_str().unwrap().to_string()
    }

    fn req(&self, method: Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.client.request(method, url).bearer_auth(&self.token)
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.req(Method::GET, self.url_q(path, query))
            .send()
            .await
            .unwrap()
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self
            .req(method, self.url_q(path, &[]))
            .header("content-type", "application/scim+json")
            .body(body.to_string());
        if let Some(tag) = if_match {
            r = r.header("if-match", tag);
        }
        r.send().await.unwrap()
    }

    async fn create(&self, body: Value) -> Value {
        let res = self
            .send_json(Method::POST, &format!("{SCIM}/users"), &body, None)
            .await;
        assert_eq!(res.status(), 201, "{:?}", res.text().await);
        res.json().await.unwrap()
    }

    async fn patch(&self, id: &str, ops: Value, if_match: Option<&str>) -> reqwest::Response {
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": ops});
        self.send_json(
            Method::PATCH,
            &format!("{SCIM}/users/{id}"),
            &body,
            if_match,
        )
        .await
    }

    async fn get_user(&self, id: &str) -> (Value, String) {
        let res = self.get(&format!("{SCIM}/users/{id}"), &[]).await;
        assert_eq!(res.status(), 200);
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        (res.json().await.unwrap(), etag)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        r.send().await.unwrap()
    }

    async fn add_users(&self, users: Value) -> reqwest::Response {
        self.admin(Method::POST, "/emulator/users", Some(users))
            .await
    }

    async fn list(&self, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let res = self.get(&format!("{SCIM}/users"), query).await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn role_names(user: &Value) -> BTreeSet<String> {
    user["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_scim_error(body: &Value, status: &str, scim_type: Option<&str>) {
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    match scim_type {
        Some(t) => assert_eq!(body["scimType"], t, "{body}"),
        None => assert!(body.get("scimType").is_none(), "{body}"),
    }
    assert!(body["detail"].is_string());
}

/// The Genesys `ErrorBody` shape; `contextId` is the response's `inin-correlation-id`.
async fn assert_genesys_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status);
    let correlation = res.headers()["inin-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["contextId"], correlation.as_str());
    assert_eq!(body["details"], json!([]));
    assert_eq!(body["errors"], json!([]));
    assert!(body["message"].is_string());
    body
}

fn user_body(user_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "displayName": user_name,
        "externalId": external_id,
    })
}

// ---------------------------------------------------------------------------------------------
// OAuth

#[tokio::test]
async fn bad_client_credentials_get_401_with_the_genesys_body() {
    let emu = Emu::start(args()).await;
    let res = emu.token_response("rolesync-dev", "wrong").await;
    assert_genesys_error(res, 401, "bad.credentials").await;
    let res = emu.token_response("nobody", "rolesync-dev-secret").await;
    assert_genesys_error(res, 401, "bad.credentials").await;
    emu.stop().await;
}

#[tokio::test]
async fn api_calls_need_a_valid_token() {
    let emu = Emu::start(args()).await;
    let url = emu.url(&format!("{SCIM}/users"));
    let res = emu.client.get(&url).send().await.unwrap();
    assert_genesys_error(res, 401, "authentication.required").await;
    let res = emu
        .client
        .get(&url)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_genesys_error(res, 401, "bad.credentials").await;
    let res = emu
        .client
        .get(emu.url("/api/v2/authorization/roles"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(emu.get(&format!("{SCIM}/users"), &[]).await.status(), 200);
    emu.stop().await;
}

#[tokio::test]
async fn an_expired_token_gets_401() {
    let emu = Emu::start(EmulatorArgs {
        token_ttl_secs: 1,
        ..args()
    })
    .await;
    let res = emu
        .token_response("rolesync-dev", "rolesync-dev-secret")
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 1);
    assert_eq!(emu.get(&format!("{SCIM}/users"), &[]).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = emu.get(&format!("{SCIM}/users"), &[]).await;
    assert_genesys_error(res, 401, "bad.credentials").await;
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Listing, paging, filters

#[tokio::test]
async fn a_page_over_25_is_429_unless_attributes_trim_it() {
    let emu = Emu::start(EmulatorArgs {
        users: 30,
        ..args()
    })
    .await;
    let res = emu.get(&format!("{SCIM}/users"), &[("count", "26")]).await;
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_genesys_error(res, 429, "too.many.requests").await;

    let (status, body) = emu
        .list(&[("count", "26"), ("attributes", "id,userName,externalId")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["itemsPerPage"], 26);
    assert_eq!(body["Resources"].as_array().unwrap().len(), 26);
    assert!(body["Resources"][0].get("roles").is_none());
    assert!(body["Resources"][0].get("externalId").is_some());

    let (status, body) = emu
        .list(&[("count", "30"), ("excludedAttributes", "roles")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["itemsPerPage"], 30);

    let (status, body) = emu.list(&[("count", "25")]).await;
    assert_eq!(status, 200);
    assert_eq!(body["itemsPerPage"], 25);
    emu.stop().await;
}

#[tokio::test]
async fn count_zero_returns_only_total_results() {
    let emu = Emu::start(EmulatorArgs { users: 7, ..args() }).await;
    let (status, body) = emu.list(&[("count", "0")]).await;
    assert_eq!(status, 200);
    assert_eq!(body["totalResults"], 7);
    assert_eq!(body["itemsPerPage"], 0);
    assert_eq!(body["Resources"], json!([]));
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    emu.stop().await;
}

#[tokio::test]
async fn paging_is_one_based_and_stable() {
    let emu = Emu::start(EmulatorArgs {
        users: 30,
        ..args()
    })
    .await;
    let (_, first) = emu.list(&[("count", "10")]).await;
    assert_eq!(first["startIndex"], 1);
    assert_eq!(first["Resources"][0]["externalId"], "EMP-000001");
    let (_, last) = emu.list(&[("startIndex", "26"), ("count", "10")]).await;
    assert_eq!(last["totalResults"], 30);
    assert_eq!(last["startIndex"], 26);
    assert_eq!(last["itemsPerPage"], 5);
    assert_eq!(last["Resources"][0]["externalId"], "EMP-000026");
    assert_eq!(last["Resources"][0]["userName"], "emp-000026@example.com");
    assert_eq!(role_names(&last["Resources"][0]), names(&["Employee"]));
    emu.stop().await;
}

#[tokio::test]
async fn filter_values_honour_rfc7644_escaping() {
    let emu = Emu::start(args()).await;
    let tricky = r#"x" or userName pr ""#;
    let me = emu.create(user_body("tricky@example.com", tricky)).await;
    emu.create(user_body("other@example.com", "x")).await;
    emu.create(user_body("slash@example.com", r"a\b")).await;

    let (status, body) = emu
        .list(&[("filter", r#"externalId eq "x\" or userName pr \"""#)])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalResults"], 1);
    assert_eq!(body["Resources"][0]["id"], me["id"]);
    assert_eq!(body["Resources"][0]["externalId"], tricky);

    let (_, body) = emu.list(&[("filter", r#"externalId eq "a\\b""#)]).await;
    assert_eq!(body["totalResults"], 1);
    assert_eq!(body["Resources"][0]["userName"], "slash@example.com");

    // userName is case-insensitive; Genesys' unquoted form works too.
    let (_, body) = emu
        .list(&[("filter", "userName eq TRICKY@example.com")])
        .await;
    assert_eq!(body["totalResults"], 1);
    let (_, body) = emu
        .list(&[(
            "filter",
            &format!("id eq \"{}\"", me["id"].as_str().unwrap()),
        )])
        .await;
    assert_eq!(body["totalResults"], 1);
    let (_, body) = emu.list(&[("filter", r#"externalId eq "nobody""#)]).await;
    assert_eq!(body["totalResults"], 0);
    emu.stop().await;
}

#[tokio::test]
async fn and_or_and_other_operators_are_rejected() {
    let emu = Emu::start(args()).await;
    for filter in [
        r#"externalId eq "a" or externalId eq "b""#,
        r#"externalId eq "a" and userName eq "b""#,
        r#"not (externalId eq "a")"#,
        r#"userName co "a""#,
        r#"userName sw "a""#,
        "userName pr",
        r#"externalId eq "unterminated"#,
        r#"displayName eq "x""#,
        "",
    ] {
        if filter.is_empty() {
            continue;
        }
        let (status, body) = emu.list(&[("filter", filter)]).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_scim_error(&body, "400", Some("invalidFilter"));
    }
    emu.stop().await;
}

#[tokio::test]
async fn several_users_may_share_an_external_id() {
    let emu = Emu::start(args()).await;
    let res = emu
        .add_users(json!([
            {"userName": "twin1@example.com", "externalId": "EMP-TWIN", "displayName": "Twin 1"},
            {"userName": "twin2@example.com", "externalId": "EMP-TWIN", "roles": [{"value": "Agent"}]},
        ]))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"created": 2}));
    let (_, body) = emu.list(&[("filter", r#"externalId eq "EMP-TWIN""#)]).await;
    assert_eq!(body["totalResults"], 2);
    assert_eq!(body["Resources"][0]["userName"], "twin1@example.com");
    assert_eq!(
        role_names(&body["Resources"][1]),
        names(&["Agent", "Employee"])
    );

    let dump: Value = emu
        .admin(Method::GET, "/emulator/users", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dump.as_array().unwrap().len(), 2);
    assert_eq!(dump[1]["roles"], json!(["Agent", "Employee"]));
    assert_eq!(dump[1]["version"], 1);

    // A duplicate userName or an unknown role refuses the whole batch.
    let res = emu
        .add_users(json!([{"userName": "TWIN1@example.com"}]))
        .await;
    assert_eq!(res.status(), 409);
    let res = emu
        .add_users(json!([{"userName": "new@example.com"}, {"userName": "x@example.com", "roles": [{"value": "Janitor"}]}]))
        .await;
    assert_eq!(res.status(), 400);
    let (_, body) = emu.list(&[("count", "0")]).await;
    assert_eq!(body["totalResults"], 2);
    emu.stop().await;
}

#[tokio::test]
async fn attributes_and_excluded_attributes_project_users() {
    let emu = Emu::start(EmulatorArgs { users: 1, ..args() }).await;
    let (_, body) = emu.list(&[("attributes", "roles")]).await;
    let u = &body["Resources"][0];
    for always in ["id", "userName", "active", "meta", "schemas"] {
        assert!(u.get(always).is_some(), "{always} missing: {u}");
    }
    assert!(u.get("roles").is_some());
    assert!(u.get("externalId").is_none());
    assert!(u.get("displayName").is_none());

    let (_, body) = emu
        .list(&[(
            "attributes",
            "urn:ietf:params:scim:schemas:core:2.0:User:externalId,meta.version",
        )])
        .await;
    let u = &body["Resources"][0];
    assert_eq!(u["externalId"], "EMP-000001");
    assert!(u.get("roles").is_none());

    let (_, body) = emu
        .list(&[("excludedAttributes", "roles,displayName,id")])
        .await;
    let u = &body["Resources"][0];
    assert!(u.get("roles").is_none());
    assert!(u.get("displayName").is_none());
    assert!(u.get("id").is_some(), "id is always returned");
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Create, read, replace, delete

#[tokio::test]
async fn create_answers_201_and_refuses_a_duplicate_user_name() {
    let emu = Emu::start(args()).await;
    let res = emu
        .send_json(
            Method::POST,
            &format!("{SCIM}/users"),
            &user_body("dup@example.com", "E1"),
            None,
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["content-type"], "application/scim+json");
    assert_eq!(res.headers()["etag"], "\"1\"");
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(created["meta"]["version"], "\"1\"");
    assert!(created["meta"]["lastModified"].is_string());
    assert!(
        created["meta"]["location"]
            .as_str()
            .unwrap()
            .ends_with(created["id"].as_str().unwrap())
    );
    assert_eq!(role_names(&created), names(&["Employee"]));

    let res = emu
        .send_json(
            Method::POST,
            &format!("{SCIM}/users"),
            &user_body("DUP@example.com", "E2"),
            None,
        )
        .await;
    assert_eq!(res.status(), 409);
    assert_scim_error(&res.json().await.unwrap(), "409", Some("uniqueness"));

    // application/json bodies are accepted too; missing userName is a 400.
    let res = emu
        .req(Method::POST, emu.url_q(&format!("{SCIM}/users"), &[]))
        .header("content-type", "application/json")
        .body(json!({"displayName": "No Name"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    emu.stop().await;
}

#[tokio::test]
async fn put_replaces_the_whole_user() {
    let emu = Emu::start(args()).await;
    let u = emu
        .create(json!({
            "userName": "put@example.com", "displayName": "Put Me", "externalId": "EMP-PUT",
            "title": "Boss", "roles": [{"value": "Agent"}]
        }))
        .await;
    let id = u["id"].as_str().unwrap();
    let res = emu
        .send_json(
            Method::PUT,
            &format!("{SCIM}/users/{id}"),
            &json!({"userName": "put@example.com", "roles": [{"value": "Reporting"}]}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let (after, _) = emu.get_user(id).await;
    assert!(after.get("displayName").is_none(), "{after}");
    assert!(after.get("externalId").is_none(), "{after}");
    assert!(after.get("title").is_none(), "{after}");
    assert_eq!(role_names(&after), names(&["Employee", "Reporting"]));
    let (_, body) = emu.list(&[("filter", r#"externalId eq "EMP-PUT""#)]).await;
    assert_eq!(body["totalResults"], 0);

    // A PUT with only roles has no userName: refused.
    let res = emu
        .send_json(
            Method::PUT,
            &format!("{SCIM}/users/{id}"),
            &json!({"roles": [{"value": "Agent"}]}),
            None,
        )
        .await;
    assert_eq!(res.status(), 400);
    emu.stop().await;
}

#[tokio::test]
async fn delete_is_soft_and_frees_the_user_name() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("gone@example.com", "EMP-GONE")).await;
    let id = u["id"].as_str().unwrap();
    let res = emu
        .req(
            Method::DELETE,
            emu.url_q(&format!("{SCIM}/users/{id}"), &[]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = emu.get(&format!("{SCIM}/users/{id}"), &[]).await;
    assert_eq!(res.status(), 404);
    assert_scim_error(&res.json().await.unwrap(), "404", None);
    let (_, body) = emu.list(&[("filter", r#"externalId eq "EMP-GONE""#)]).await;
    assert_eq!(body["totalResults"], 0);
    emu.create(user_body("gone@example.com", "EMP-GONE")).await;
    emu.stop().await;
}

#[tokio::test]
async fn both_path_families_and_rfc_spelling_reach_the_same_users() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("fam@example.com", "EMP-FAM")).await;
    let id = u["id"].as_str().unwrap();
    for path in [
        format!("/api/v2/scim/v2/users/{id}"),
        format!("/api/v2/scim/users/{id}"),
        format!("/api/v2/scim/v2/Users/{id}"),
    ] {
        let res = emu.get(&path, &[]).await;
        assert_eq!(res.status(), 200, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["id"], id);
    }
    let res = emu
        .get(
            "/api/v2/scim/users",
            &[("filter", r#"externalId eq "EMP-FAM""#)],
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["totalResults"], 1);
    assert!(
        body["Resources"][0]["meta"]["location"]
            .as_str()
            .unwrap()
            .contains("/api/v2/scim/users/")
    );
    for path in [
        "/api/v2/scim/v2/serviceproviderconfig",
        "/api/v2/scim/serviceproviderconfig",
        "/api/v2/scim/v2/ServiceProviderConfig",
    ] {
        let res = emu.get(path, &[]).await;
        assert_eq!(res.status(), 200, "{path}");
    }
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// ETags and PATCH

#[tokio::test]
async fn a_stale_if_match_is_409_on_genesys() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("etag@example.com", "EMP-E")).await;
    let id = u["id"].as_str().unwrap();
    let ops = json!([{"op": "replace", "path": "roles", "value": [{"value": "Agent"}]}]);
    let res = emu.patch(id, ops.clone(), Some("\"1\"")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let res = emu.patch(id, ops, Some("\"1\"")).await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_scim_error(&body, "409", None);
    assert_eq!(body["detail"], "Version does not match current version.");

    for method in [Method::PUT, Method::DELETE] {
        let res = emu
            .send_json(
                method.clone(),
                &format!("{SCIM}/users/{id}"),
                &user_body("etag@example.com", "EMP-E"),
                Some("\"1\""),
            )
            .await;
        assert_eq!(res.status(), 409, "{method}");
    }
    // meta.version is accepted verbatim as If-Match.
    let (user, etag) = emu.get_user(id).await;
    assert_eq!(user["meta"]["version"], etag.as_str());
    let res = emu
        .patch(
            id,
            json!([{"op": "replace", "path": "title", "value": "T"}]),
            Some(user["meta"]["version"].as_str().unwrap()),
        )
        .await;
    assert_eq!(res.status(), 200);
    emu.stop().await;
}

#[tokio::test]
async fn rfc7644_profile_weak_etags_412_and_204() {
    let emu = Emu::start(EmulatorArgs {
        profile: Profile::Rfc7644,
        ..args()
    })
    .await;
    let u = emu.create(json!({"userName": "rfc@example.com"})).await;
    let id = u["id"].as_str().unwrap();
    assert_eq!(u["meta"]["version"], "W/\"1\"");
    let ops = json!([{"op": "add", "path": "roles", "value": [{"value": "Agent"}]}]);
    let res = emu.patch(id, ops.clone(), Some("W/\"1\"")).await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["etag"], "W/\"2\"");
    assert!(res.bytes().await.unwrap().is_empty());
    let res = emu.patch(id, ops.clone(), Some("W/\"1\"")).await;
    assert_eq!(res.status(), 412);
    assert_scim_error(&res.json().await.unwrap(), "412", None);
    // With `attributes`, PATCH answers 200 with the user.
    let url = emu.url_q(&format!("{SCIM}/users/{id}"), &[("attributes", "roles")]);
    let res = emu
        .req(Method::PATCH, url)
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "add", "path": "roles", "value": [{"value": "Reporting"}]}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        role_names(&body),
        names(&["Agent", "Employee", "Reporting"])
    );
    // No 25-per-page rule in this profile.
    let (status, _) = emu.list(&[("count", "150")]).await;
    assert_eq!(status, 200);
    emu.stop().await;
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("inm@example.com", "EMP-INM")).await;
    let id = u["id"].as_str().unwrap();
    let url = emu.url_q(&format!("{SCIM}/users/{id}"), &[]);
    let res = emu
        .req(Method::GET, url.clone())
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let res = emu
        .req(Method::GET, url)
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    emu.stop().await;
}

#[tokio::test]
async fn the_etag_changes_on_a_change_and_not_on_a_no_op() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("noop@example.com", "EMP-NOOP")).await;
    let id = u["id"].as_str().unwrap();
    let ops = json!([{"op": "replace", "path": "roles", "value": [{"value": "Agent"}, {"value": "Employee"}]}]);
    let res = emu.patch(id, ops.clone(), None).await;
    assert_eq!(res.headers()["etag"], "\"2\"");
    let res = emu.patch(id, ops, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"", "a no-op keeps the version");
    let res = emu
        .patch(
            id,
            json!([{"op": "replace", "value": {"displayName": "noop@example.com"}}]),
            None,
        )
        .await;
    assert_eq!(res.headers()["etag"], "\"2\"");
    let res = emu
        .patch(
            id,
            json!([{"op": "replace", "path": "active", "value": false}]),
            None,
        )
        .await;
    assert_eq!(res.headers()["etag"], "\"3\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["active"], false);
    assert_eq!(body["meta"]["version"], "\"3\"");
    let (_, etag) = emu.get_user(id).await;
    assert_eq!(etag, "\"3\"");
    emu.stop().await;
}

#[tokio::test]
async fn employee_stays_on_replace_and_cannot_be_removed() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("emp@example.com", "EMP-EMP")).await;
    let id = u["id"].as_str().unwrap();
    let res = emu
        .patch(
            id,
            json!([{"op": "replace", "path": "roles", "value": [{"value": "Supervisor"}]}]),
            None,
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(role_names(&body), names(&["Employee", "Supervisor"]));
    assert_eq!(body["meta"]["version"], "\"2\"");

    // Removing Employee is ignored: no change, no new version.
    let res = emu
        .patch(
            id,
            json!([{"op": "remove", "path": "roles[value eq \"Employee\"]"}]),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(role_names(&body), names(&["Employee", "Supervisor"]));
    assert_eq!(body["meta"]["version"], "\"2\"");
    let res = emu
        .patch(id, json!([{"op": "remove", "path": "roles"}]), None)
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(role_names(&body), names(&["Employee"]));
    emu.stop().await;
}

#[tokio::test]
async fn an_unknown_role_is_400_naming_it() {
    let emu = Emu::start(args()).await;
    let mut body = user_body("role@example.com", "EMP-R");
    body["roles"] = json!([{"value": "Astronaut"}]);
    let res = emu
        .send_json(Method::POST, &format!("{SCIM}/users"), &body, None)
        .await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_scim_error(&err, "400", Some("invalidValue"));
    assert!(err["detail"].as_str().unwrap().contains("Astronaut"));

    let u = emu.create(user_body("role@example.com", "EMP-R")).await;
    let id = u["id"].as_str().unwrap();
    let res = emu
        .patch(
            id,
            json!([{"op": "add", "path": "roles", "value": [{"value": "agent"}]}]),
            None,
        )
        .await;
    assert_eq!(res.status(), 400, "role names are case-sensitive");
    let err: Value = res.json().await.unwrap();
    assert!(err["detail"].as_str().unwrap().contains("agent"));
    let (user, _) = emu.get_user(id).await;
    assert_eq!(user["meta"]["version"], "\"1\"");
    emu.stop().await;
}

#[tokio::test]
async fn patch_remove_with_a_value_filter_and_other_ops() {
    let emu = Emu::start(args()).await;
    let mut body = user_body("filt@example.com", "EMP-F");
    body["roles"] = json!([{"value": "Agent"}, {"value": "Reporting"}, {"value": "Wrap Up"}]);
    let u = emu.create(body).await;
    let id = u["id"].as_str().unwrap();
    let res = emu
        .patch(
            id,
            json!([
                {"op": "Remove", "path": "roles[value eq \"Reporting\"]"},
                {"op": "ADD", "path": "roles", "value": [{"value": "Queue Member"}]},
                {"op": "replace", "path": "title", "value": "Lead"},
                {"op": "replace", "value": {"displayName": "Filt", "active": false}}
            ]),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        role_names(&body),
        names(&["Agent", "Employee", "Queue Member", "Wrap Up"])
    );
    assert_eq!(body["title"], "Lead");
    assert_eq!(body["displayName"], "Filt");
    assert_eq!(body["active"], false);
    assert_eq!(body["meta"]["version"], "\"2\"", "one PATCH, one version");

    // Bad PATCH bodies are 400s, never 500s.
    for bad in [
        json!({"schemas": [PATCH_SCHEMA], "operations": []}),
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "move", "path": "title"}]}),
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "remove"}]}),
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "roles[value eq", "value": 1}]}),
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": "maybe"}]}),
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "id", "value": "x"}]}),
        json!(["not", "an", "object"]),
    ] {
        let res = emu
            .send_json(Method::PATCH, &format!("{SCIM}/users/{id}"), &bad, None)
            .await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    let res = emu
        .req(Method::PATCH, emu.url_q(&format!("{SCIM}/users/{id}"), &[]))
        .header("content-type", "application/scim+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Rate limit, faults, stats, admin

#[tokio::test]
async fn rate_limit_headers_and_429_with_retry_after() {
    let emu = Emu::start(EmulatorArgs {
        rate_limit_per_minute: 5,
        ..args()
    })
    .await;
    for i in 1..=5u64 {
        let res = emu.get(&format!("{SCIM}/users"), &[]).await;
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["inin-ratelimit-allowed"], "5");
        assert_eq!(h["inin-ratelimit-count"], i.to_string().as_str());
        let reset: u64 = h["inin-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset));
    }
    let res = emu.get("/api/v2/authorization/roles", &[]).await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(res.headers()["inin-ratelimit-count"], "6");
    let body = assert_genesys_error(res, 429, "too.many.requests.retry.after").await;
    assert_eq!(
        body["message"],
        format!("Rate limit exceeded the maximum. Retry the request in [{retry}] seconds")
    );
    // The token endpoint and the admin endpoints are not limited; a new token has its own window.
    emu.new_token().await;
    assert_eq!(
        emu.admin(Method::GET, "/emulator/stats", None)
            .await
            .status(),
        200
    );
    let res = emu
        .client
        .get(emu.url(&format!("{SCIM}/users")))
        .bearer_auth(emu.new_token().await)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    emu.stop().await;
}

async fn statuses(emu: &Emu, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            emu.get(&format!("{SCIM}/users"), &[("count", "1")])
                .await
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn faults_are_deterministic_with_a_seed() {
    let seeded = || EmulatorArgs {
        fault_5xx: 0.3,
        fault_429: 0.3,
        seed: Some(42),
        ..args()
    };
    let a = Emu::start(seeded()).await;
    let b = Emu::start(seeded()).await;
    let sa = statuses(&a, 40).await;
    let sb = statuses(&b, 40).await;
    assert_eq!(sa, sb);
    assert!(
        sa.contains(&503) && sa.contains(&429) && sa.contains(&200),
        "{sa:?}"
    );
    let res = a.get(&format!("{SCIM}/users"), &[]).await;
    if res.status() == 429 {
        assert_eq!(res.headers()["retry-after"], "1");
    }
    // The token endpoint is never faulted.
    for _ in 0..10 {
        a.new_token().await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn faults_change_at_run_time_and_an_outage_answers_503() {
    let emu = Emu::start(args()).await;
    let res = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"outage_secs": 1, "latency_ms": 20})),
        )
        .await;
    assert_eq!(res.status(), 200);
    let settings: Value = emu
        .admin(Method::GET, "/emulator/faults", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settings["latency_ms"], 20);
    assert!(settings["outage_remaining_secs"].as_f64().unwrap() > 0.0);

    let started = std::time::Instant::now();
    let res = emu.get(&format!("{SCIM}/users"), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert!(res.headers().contains_key("retry-after"));
    assert_genesys_error(res, 503, "service.unavailable").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(emu.get(&format!("{SCIM}/users"), &[]).await.status(), 200);

    // Bad settings are refused.
    let res = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"fault_5xx": 2.0})),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"fault_typo": 0.1})),
        )
        .await;
    assert_eq!(res.status(), 400);

    // A dropped connection: no answer at all.
    emu.admin(
        Method::POST,
        "/emulator/faults",
        Some(json!({"drop_connection": 1.0, "latency_ms": 0})),
    )
    .await;
    let res = emu
        .req(Method::GET, emu.url_q(&format!("{SCIM}/users"), &[]))
        .send()
        .await;
    match res {
        Err(_) => {}
        Ok(r) => assert!(r.bytes().await.is_err(), "the connection should be dropped"),
    }
    emu.admin(
        Method::POST,
        "/emulator/faults",
        Some(json!({"drop_connection": 0.0})),
    )
    .await;
    assert_eq!(emu.get(&format!("{SCIM}/users"), &[]).await.status(), 200);
    emu.stop().await;
}

#[tokio::test]
async fn reject_patch_refuses_writes_and_leaves_reads_alone() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("reject@example.com", "EMP-X")).await;
    let id = u["id"].as_str().unwrap();
    let res = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"reject_patch": 1.0})),
        )
        .await;
    let settings: Value = res.json().await.unwrap();
    assert_eq!(settings["reject_patch"], 1.0);
    let add_agent = json!([{"op": "add", "path": "roles", "value": [{"value": "Agent"}]}]);
    let res = emu.patch(id, add_agent.clone(), None).await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_scim_error(&err, "400", Some("invalidValue"));
    assert!(err["detail"].as_str().unwrap().contains("reject_patch"));
    // Reads answer; the user is unchanged.
    let (user, _) = emu.get_user(id).await;
    assert_eq!(role_names(&user), names(&["Employee"]));
    assert_eq!(emu.list(&[]).await.0, 200);
    emu.admin(
        Method::POST,
        "/emulator/faults",
        Some(json!({"reject_patch": 0.0})),
    )
    .await;
    assert_eq!(emu.patch(id, add_agent, None).await.status(), 200);
    let res = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"reject_patch": 1.5})),
        )
        .await;
    assert_eq!(res.status(), 400, "a probability");
    emu.stop().await;
}

#[tokio::test]
async fn stats_count_requests_by_route_pattern() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("stats@example.com", "EMP-S")).await;
    let id = u["id"].as_str().unwrap();
    emu.admin(Method::POST, "/emulator/stats/reset", None).await;
    for _ in 0..3 {
        emu.get(&format!("{SCIM}/users/{id}"), &[]).await;
    }
    emu.get(&format!("{SCIM}/users/does-not-exist"), &[]).await;
    emu.get(&format!("{SCIM}/users"), &[("count", "26")]).await;
    emu.get("/api/v2/scim/users", &[]).await;
    emu.new_token().await;
    emu.admin(Method::GET, "/emulator/faults", None).await;

    let stats: Value = emu
        .admin(Method::GET, "/emulator/stats", None)
        .await
        .json()
        .await
        .unwrap();
    let count = |method: &str, route: &str, status: u64| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["route"] == route && r["status"] == status)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert_eq!(
        count("GET", "/api/v2/scim/v2/users/{id}", 200),
        3,
        "{stats}"
    );
    assert_eq!(count("GET", "/api/v2/scim/v2/users/{id}", 404), 1);
    assert_eq!(count("GET", "/api/v2/scim/v2/users", 429), 1);
    assert_eq!(count("GET", "/api/v2/scim/users", 200), 1);
    assert_eq!(count("POST", "/oauth/token", 200), 1);
    assert_eq!(stats["total"], 7, "/emulator/* is not counted: {stats}");

    let stats: Value = emu
        .admin(Method::POST, "/emulator/stats/reset", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total"], 0);
    emu.stop().await;
}

#[tokio::test]
async fn stats_count_and_keep_the_last_well_formed_traceparent() {
    let emu = Emu::start(args()).await;
    emu.admin(Method::POST, "/emulator/stats/reset", None).await;
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for tp in [
        Some(good),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("not a traceparent"),
        None,
    ] {
        let mut req = emu.req(Method::GET, emu.url_q(&format!("{SCIM}/users"), &[]));
        if let Some(tp) = tp {
            req = req.header("traceparent", tp);
        }
        assert_eq!(req.send().await.unwrap().status(), 200);
    }
    let stats: Value = emu
        .admin(Method::GET, "/emulator/stats", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total"], 5, "{stats}");
    assert_eq!(
        stats["traceparent"]["count"], 1,
        "only the well-formed one: {stats}"
    );
    assert_eq!(stats["traceparent"]["last"], good);
    let stats: Value = emu
        .admin(Method::POST, "/emulator/stats/reset", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["traceparent"]["count"], 0);
    assert!(stats["traceparent"]["last"].is_null());
    emu.stop().await;
}

#[tokio::test]
async fn reset_clears_users_stats_and_tokens() {
    let emu = Emu::start(EmulatorArgs { users: 3, ..args() }).await;
    let (_, body) = emu
        .list(&[("filter", r#"externalId eq "EMP-000003""#)])
        .await;
    assert_eq!(body["Resources"][0]["userName"], "emp-000003@example.com");
    assert_eq!(
        body["Resources"][0]["displayName"]
            .as_str()
            .map(|s| !s.is_empty()),
        Some(true)
    );
    let res = emu.admin(Method::POST, "/emulator/reset", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(emu.get(&format!("{SCIM}/users"), &[]).await.status(), 401);
    let stats: Value = emu
        .admin(Method::GET, "/emulator/stats", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total"], 1);
    let client = reqwest::Client::new();
    let res = client
        .get(emu.url(&format!("{SCIM}/users?count=0")))
        .bearer_auth(emu.new_token().await)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["totalResults"], 0);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Staged faults: named failing users, overridden headers, the token's expires_in

impl Emu {
    /// `POST /emulator/faults`; the status and the settings it answers.
    async fn set_faults(&self, body: Value) -> (StatusCode, Value) {
        let res = self
            .admin(Method::POST, "/emulator/faults", Some(body))
            .await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn faults(&self) -> Value {
        self.admin(Method::GET, "/emulator/faults", None)
            .await
            .json()
            .await
            .unwrap()
    }

    /// The id of the (only) user with this externalId, from the admin dump.
    async fn id_of(&self, external_id: &str) -> String {
        let dump: Value = self
            .admin(Method::GET, "/emulator/users", None)
            .await
            .json()
            .await
            .unwrap();
        dump.as_array()
            .unwrap()
            .iter()
            .find(|u| u["externalId"] == external_id)
            .map(|u| u["id"].as_str().unwrap().to_string())
            .unwrap()
    }

    async fn stat(&self, method: &str, route: &str, status: u64) -> u64 {
        let stats: Value = self
            .admin(Method::GET, "/emulator/stats", None)
            .await
            .json()
            .await
            .unwrap();
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["route"] == route && r["status"] == status)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    }
}

fn add_role(role: &str) -> Value {
    json!([{"op": "add", "path": "roles", "value": [{"value": role}]}])
}

#[tokio::test]
async fn a_named_failing_user_fails_every_write_and_reads_only_when_asked() {
    let emu = Emu::start(EmulatorArgs {
        users: 10,
        ..args()
    })
    .await;
    let id7 = emu.id_of("EMP-000007").await;
    let id8 = emu.id_of("EMP-000008").await;
    emu.admin(Method::POST, "/emulator/stats/reset", None).await;

    let (status, settings) = emu
        .set_faults(json!({"failing_users": [
            {"external_id": "EMP-000007", "writes": true, "reads": false, "status": 503}
        ]}))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(
        settings["failing_users"],
        json!([{"external_id": "EMP-000007", "writes": true, "reads": false, "status": 503}])
    );
    // Every write of user 7 fails, PATCH and PUT alike; user 8 is written.
    for _ in 0..5 {
        let res = emu.patch(&id7, add_role("Agent"), None).await;
        assert_genesys_error(res, 503, "service.unavailable").await;
    }
    let res = emu
        .send_json(
            Method::PUT,
            &format!("{SCIM}/users/{id7}"),
            &user_body("emp-000007@example.com", "EMP-000007"),
            None,
        )
        .await;
    assert_genesys_error(res, 503, "service.unavailable").await;
    assert_eq!(emu.patch(&id8, add_role("Agent"), None).await.status(), 200);
    // Reads of user 7 answer (reads is false) and show it unchanged.
    let (user7, etag) = emu.get_user(&id7).await;
    assert_eq!(role_names(&user7), names(&["Employee"]));
    assert_eq!(etag, "\"1\"");
    let (status, body) = emu
        .list(&[("filter", r#"externalId eq "EMP-000007""#)])
        .await;
    assert_eq!((status, &body["totalResults"]), (StatusCode::OK, &json!(1)));
    // The failures are counted like any other answer.
    assert_eq!(
        emu.stat("PATCH", "/api/v2/scim/v2/users/{id}", 503).await,
        5
    );
    assert_eq!(emu.stat("PUT", "/api/v2/scim/v2/users/{id}", 503).await, 1);
    assert_eq!(
        emu.stat("PATCH", "/api/v2/scim/v2/users/{id}", 200).await,
        1
    );

    // Reads of user 7 fail with another 5xx; user 8, by id, fails both ways with the default
    // 503; the other users and unfiltered lists answer.
    let (status, settings) = emu
        .set_faults(json!({"failing_users": [
            {"external_id": "EMP-000007", "writes": false, "reads": true, "status": 500},
            {"id": id8, "reads": true}
        ]}))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(
        settings["failing_users"][1],
        json!({"id": id8, "writes": true, "reads": true, "status": 503})
    );
    let res = emu.get(&format!("{SCIM}/users/{id7}"), &[]).await;
    assert_genesys_error(res, 500, "internal.server.error").await;
    let res = emu
        .get(
            &format!("{SCIM}/users"),
            &[("filter", r#"externalId eq "EMP-000007""#)],
        )
        .await;
    assert_genesys_error(res, 500, "internal.server.error").await;
    let res = emu
        .get(
            &format!("{SCIM}/users"),
            &[("filter", &format!("id eq \"{id8}\""))],
        )
        .await;
    assert_genesys_error(res, 503, "service.unavailable").await;
    let res = emu.get(&format!("/api/v2/scim/users/{id8}"), &[]).await;
    assert_genesys_error(res, 503, "service.unavailable").await;
    let res = emu.patch(&id8, add_role("Reporting"), None).await;
    assert_genesys_error(res, 503, "service.unavailable").await;
    assert_eq!(emu.patch(&id7, add_role("Agent"), None).await.status(), 200);
    let id1 = emu.id_of("EMP-000001").await;
    assert_eq!(emu.get_user(&id1).await.1, "\"1\"");
    let (status, body) = emu
        .list(&[("filter", r#"externalId eq "EMP-000001""#)])
        .await;
    assert_eq!((status, &body["totalResults"]), (StatusCode::OK, &json!(1)));
    assert_eq!(emu.list(&[]).await.0, 200, "an unfiltered list answers");

    // Refused bodies change nothing.
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"external_id": format!("X-{i}")}))
        .collect();
    for bad in [
        json!({"failing_users": too_many}),
        json!({"failing_users": [{"external_id": "E", "status": 404}]}),
        json!({"failing_users": [{"id": "a", "external_id": "E"}]}),
        json!({"failing_users": [{"external_id": "E", "writes": false}]}),
        json!({"failing_users": [{"external_id": "E", "typo": true}]}),
        json!({"failing_users": [], "fault_5xx": 7.0}),
    ] {
        let (status, body) = emu.set_faults(bad).await;
        assert_eq!(status, 400, "{body}");
        assert_scim_error(&body, "400", Some("invalidValue"));
    }
    assert_eq!(
        emu.faults().await["failing_users"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"external_id": format!("X-{i}")}))
        .collect();
    let (status, _) = emu.set_faults(json!({"failing_users": many})).await;
    assert_eq!(status, 200, "10 000 entries are allowed");

    // Clearing restores both users.
    let (status, settings) = emu.set_faults(json!({"failing_users": []})).await;
    assert_eq!(status, 200);
    assert_eq!(settings["failing_users"], json!([]));
    assert_eq!(emu.get_user(&id7).await.1, "\"2\"");
    assert_eq!(
        emu.patch(&id8, add_role("Reporting"), None).await.status(),
        200
    );
    assert_eq!(
        emu.patch(&id7, add_role("Reporting"), None).await.status(),
        200
    );
    emu.stop().await;
}

const HUGE_RESET: &str = "18446744073709551615";
const HUGE_RETRY: &str = "99999999999";

#[tokio::test]
async fn overridden_headers_are_on_exactly_n_responses_then_stop() {
    let emu = Emu::start(EmulatorArgs {
        users: 1,
        rate_limit_per_minute: 10_000,
        ..args()
    })
    .await;
    let id = emu.id_of("EMP-000001").await;
    let (status, settings) = emu
        .set_faults(json!({"override_headers": {"count": 3, "headers": {
            "inin-ratelimit-reset": HUGE_RESET, "Retry-After": HUGE_RETRY
        }}}))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(
        settings["override_headers"],
        json!({"count": 3, "headers": {"inin-ratelimit-reset": HUGE_RESET, "retry-after": HUGE_RETRY}})
    );
    // Neither the token endpoint, the admin endpoints nor a 401 use it up.
    let res = emu
        .token_response("rolesync-dev", "rolesync-dev-secret")
        .await;
    assert!(res.headers().get("retry-after").is_none());
    let res = emu
        .client
        .get(emu.url(&format!("{SCIM}/users")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(emu.faults().await["override_headers"]["count"], 3);

    // Three API calls carry the headers, replacing the emulator's own; the fourth does not.
    let calls = [
        format!("{SCIM}/users"),
        "/api/v2/authorization/roles".to_string(),
        format!("{SCIM}/users/{id}"),
    ];
    for path in &calls {
        let res = emu.get(path, &[]).await;
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        let resets: Vec<_> = h.get_all("inin-ratelimit-reset").iter().collect();
        assert_eq!(resets, [HUGE_RESET], "{path}");
        assert_eq!(h["retry-after"], HUGE_RETRY);
        assert!(h.contains_key("inin-ratelimit-count"), "the others stay");
    }
    let res = emu.get(&format!("{SCIM}/users"), &[]).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("retry-after").is_none());
    let reset: u64 = res.headers()["inin-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset));
    assert_eq!(emu.faults().await["override_headers"], Value::Null);

    // With a status, the calls answer it instead of running: a 429 with a huge Retry-After.
    let (status, settings) = emu
        .set_faults(json!({"override_headers": {"count": 2, "status": 429,
            "headers": {"retry-after": HUGE_RETRY}}}))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["override_headers"]["status"], 429);
    for _ in 0..2 {
        let res = emu.patch(&id, add_role("Agent"), None).await;
        assert_eq!(res.headers()["retry-after"], HUGE_RETRY);
        let body = assert_genesys_error(res, 429, "too.many.requests.retry.after").await;
        assert_eq!(
            body["message"],
            format!("Rate limit exceeded the maximum. Retry the request in [{HUGE_RETRY}] seconds")
        );
    }
    assert_eq!(
        emu.get_user(&id).await.1,
        "\"1\"",
        "the PATCHes did not run"
    );
    assert_eq!(emu.patch(&id, add_role("Agent"), None).await.status(), 200);

    // Exactly N even when calls race.
    let (status, _) = emu
        .set_faults(json!({"override_headers": {"count": 5, "headers": {"x-staged": "1"}}}))
        .await;
    assert_eq!(status, 200);
    let users_path = format!("{SCIM}/users");
    let responses = futures::future::join_all((0..20).map(|_| emu.get(&users_path, &[]))).await;
    let staged = responses
        .iter()
        .filter(|r| r.headers().get("x-staged").is_some())
        .count();
    assert_eq!(staged, 5);
    assert!(responses.iter().all(|r| r.status() == 200));

    // Clearing, and refused overrides.
    emu.set_faults(json!({"override_headers": {"count": 9, "headers": {"x-staged": "1"}}}))
        .await;
    let (status, settings) = emu.set_faults(json!({"override_headers": null})).await;
    assert_eq!(status, 200);
    assert_eq!(settings["override_headers"], Value::Null);
    let res = emu.get(&format!("{SCIM}/users"), &[]).await;
    assert!(res.headers().get("x-staged").is_none());
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    for bad in [
        json!({"override_headers": {"count": 1, "headers": {"content-length": "0"}}}),
        json!({"override_headers": {"count": 1, "headers": {"bad name": "x"}}}),
        json!({"override_headers": {"count": 1, "headers": {"x-a": "a\u{7}b"}}}),
        json!({"override_headers": {"count": 1, "headers": {"x-a": 5}}}),
        json!({"override_headers": {"count": 1, "headers": {"x-a": "x".repeat(4097)}}}),
        json!({"override_headers": {"count": 1, "headers": many}}),
        json!({"override_headers": {"count": 1, "status": 200}}),
        json!({"override_headers": {"headers": {"x-a": "1"}}}),
    ] {
        let (status, body) = emu.set_faults(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    emu.stop().await;
}

#[tokio::test]
async fn the_token_answer_carries_the_staged_expires_in_verbatim() {
    let emu = Emu::start(args()).await;
    for n in [
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "1e400",
        "0.5",
    ] {
        // Sent as text: the number must reach the emulator exactly as written.
        let res = emu
            .client
            .post(emu.url("/emulator/faults"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"token_expires_in": {n}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{n}");
        let settings = res.text().await.unwrap();
        assert!(
            settings.contains(&format!(r#""token_expires_in":{n}"#)),
            "{settings}"
        );
        let res = emu
            .token_response("rolesync-dev", "rolesync-dev-secret")
            .await;
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        assert!(text.ends_with(&format!(r#""expires_in":{n}}}"#)), "{text}");
        // Valid JSON whatever the number.
        serde_json::from_str::<serde::de::IgnoredAny>(&text).unwrap();
        let token = text
            .split(r#""access_token":""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        // The token still works: its real lifetime is --token-ttl-secs.
        let res = emu
            .client
            .get(emu.url(&format!("{SCIM}/users")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{n}");
    }
    // A u64 as a JSON number, through the ordinary admin helper.
    let (status, settings) = emu.set_faults(json!({"token_expires_in": u64::MAX})).await;
    assert_eq!(status, 200);
    assert_eq!(settings["token_expires_in"], u64::MAX);
    let res = emu
        .token_response("rolesync-dev", "rolesync-dev-secret")
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"].as_u64(), Some(u64::MAX));

    for bad in [r#""12""#, "true", "[1]", "{}"] {
        let res = emu
            .client
            .post(emu.url("/emulator/faults"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"token_expires_in": {bad}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    let (status, settings) = emu.set_faults(json!({"token_expires_in": null})).await;
    assert_eq!(status, 200);
    assert_eq!(settings["token_expires_in"], Value::Null);
    let res = emu
        .token_response("rolesync-dev", "rolesync-dev-secret")
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 86_400);
    emu.stop().await;
}

#[tokio::test]
async fn reset_clears_the_staged_faults() {
    let emu = Emu::start(EmulatorArgs { users: 1, ..args() }).await;
    let (status, settings) = emu
        .set_faults(json!({
            "failing_users": [{"external_id": "EMP-000001", "reads": true}],
            "override_headers": {"count": 100, "headers": {"x-staged": "1"}},
            "token_expires_in": -5
        }))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["token_expires_in"], -5);
    assert_eq!(settings["override_headers"]["count"], 100);
    assert_eq!(settings["failing_users"].as_array().unwrap().len(), 1);

    let res = emu.admin(Method::POST, "/emulator/reset", None).await;
    assert_eq!(res.status(), 200);
    let settings = emu.faults().await;
    assert_eq!(settings["failing_users"], json!([]));
    assert_eq!(settings["override_headers"], Value::Null);
    assert_eq!(settings["token_expires_in"], Value::Null);

    let res = emu
        .token_response("rolesync-dev", "rolesync-dev-secret")
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 86_400);
    let emu = Emu {
        token: body["access_token"].as_str().unwrap().to_string(),
        ..emu
    };
    // A user with the externalId that failed is read and written.
    let u = emu
        .create(user_body("again@example.com", "EMP-000001"))
        .await;
    let id = u["id"].as_str().unwrap();
    let res = emu.get(&format!("{SCIM}/users/{id}"), &[]).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-staged").is_none());
    assert_eq!(emu.patch(id, add_role("Agent"), None).await.status(), 200);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Role catalog and discovery

#[derive(serde::Deserialize)]
struct CatalogRole {
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
}

#[tokio::test]
async fn authorization_roles_page_and_match_the_policy() {
    let emu = Emu::start(args()).await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let res = emu
            .get(
                "/api/v2/authorization/roles",
                &[("pageSize", "3"), ("pageNumber", &page.to_string())],
            )
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["pageSize"], 3);
        assert_eq!(body["pageNumber"], page);
        let total = body["total"].as_u64().unwrap();
        assert_eq!(body["pageCount"], total.div_ceil(3));
        let entities = body["entities"].as_array().unwrap().clone();
        assert!(entities.len() <= 3);
        seen.extend(entities);
        if page >= body["pageCount"].as_u64().unwrap() {
            assert_eq!(seen.len() as u64, total);
            break;
        }
        page += 1;
    }
    // The built-in catalog (`roles.json`), served page by page, whole and unchanged.
    let catalog: Vec<CatalogRole> = serde_json::from_str(emulator::DEFAULT_ROLES_JSON).unwrap();
    let expected: BTreeSet<String> = catalog.iter().map(|r| r.name.clone()).collect();
    assert!(expected.contains("Employee"));
    let served: BTreeSet<String> = seen
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(served, expected);
    for role in &catalog {
        let r = seen
            .iter()
            .find(|r| r["name"] == role.name.as_str())
            .unwrap();
        assert!(
            r["id"].is_string() && r["baseLicense"].is_string() && r["description"].is_string()
        );
        assert_eq!(r["permissions"], json!(role.permissions));
        let policies: Vec<Value> = role
            .permissions
            .iter()
            .map(|p| {
                let parts: Vec<&str> = p.split(':').collect();
                json!({"domain": parts[0], "entityName": parts[1], "actionSet": [parts[2]]})
            })
            .collect();
        assert_eq!(r["permissionPolicies"], json!(policies), "{}", role.name);
    }
    // Every catalog role is a valid SCIM role value.
    let mut body = user_body("all@example.com", "EMP-ALL");
    body["roles"] = Value::Array(expected.iter().map(|n| json!({"value": n})).collect());
    let u = emu.create(body).await;
    assert_eq!(role_names(&u), expected);

    let res = emu
        .get("/api/v2/authorization/roles", &[("pageSize", "0")])
        .await;
    assert_eq!(res.status(), 400);
    emu.stop().await;
}

#[tokio::test]
async fn discovery_endpoints_describe_genesys() {
    let emu = Emu::start(args()).await;
    let spc: Value = emu
        .get(&format!("{SCIM}/serviceproviderconfig"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["filter"]["maxResults"], 100);
    assert_eq!(spc["changePassword"]["supported"], false);
    assert_eq!(spc["sort"]["supported"], false);

    let schemas: Value = emu
        .get(&format!("{SCIM}/schemas"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(schemas["totalResults"].as_u64().unwrap() >= 3);
    let res = emu
        .get(
            &format!("{SCIM}/schemas/urn:ietf:params:scim:schemas:core:2.0:User"),
            &[],
        )
        .await;
    assert_eq!(res.status(), 200);
    let user_schema: Value = res.json().await.unwrap();
    assert!(
        user_schema["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "roles")
    );
    let res = emu.get(&format!("{SCIM}/schemas/urn:nope"), &[]).await;
    assert_eq!(res.status(), 404);
    let rt: Value = emu
        .get("/api/v2/scim/resourcetypes/User", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rt["schema"], "urn:ietf:params:scim:schemas:core:2.0:User");
    assert_eq!(
        emu.get(&format!("{SCIM}/resourcetypes/Group"), &[])
            .await
            .status(),
        404
    );
    let res = emu
        .client
        .get(emu.url(&format!("{SCIM}/schemas")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "discovery needs a token too");
    emu.stop().await;
}

#[tokio::test]
async fn every_response_has_a_correlation_id() {
    let emu = Emu::start(args()).await;
    for res in [
        emu.get(&format!("{SCIM}/users"), &[]).await,
        emu.get("/nowhere", &[]).await,
        emu.token_response("x", "y").await,
        emu.admin(Method::GET, "/emulator/stats", None).await,
    ] {
        let id = res.headers()["inin-correlation-id"].to_str().unwrap();
        assert_eq!(id.len(), 36);
    }
    emu.stop().await;
}

#[tokio::test]
async fn omit_versions_strips_etag_and_meta_version_until_turned_off() {
    let emu = Emu::start(args()).await;
    let u = emu.create(user_body("nov@example.com", "EMP-NOV")).await;
    let id = u["id"].as_str().unwrap().to_owned();
    let post = |on: bool| {
        let emu = &emu;
        async move {
            let res = emu
                .client
                .post(emu.url("/emulator/faults"))
                .json(&json!({"omit_versions": on}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    post(true).await;
    let res = emu.get(&format!("{SCIM}/users/{id}"), &[]).await;
    assert!(res.headers().get("etag").is_none());
    let body: Value = res.json().await.unwrap();
    assert!(body["meta"].get("version").is_none(), "{body}");
    let list: Value = emu
        .get(
            &format!("{SCIM}/users"),
            &[("filter", "externalId eq \"EMP-NOV\"")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list["Resources"][0]["meta"].get("version").is_none(),
        "{list}"
    );
    post(false).await;
    let res = emu.get(&format!("{SCIM}/users/{id}"), &[]).await;
    assert!(res.headers().get("etag").is_some());
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authorization grants: one model with SCIM roles

impl Emu {
    async fn role_id(&self, name: &str) -> String {
        let res = self
            .get("/api/v2/authorization/roles", &[("name", name)])
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["entities"][0]["id"].as_str().unwrap().to_string()
    }

    async fn home(&self) -> String {
        let res = self.get("/api/v2/authorization/divisions/home", &[]).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["homeDivision"], true);
        body["id"].as_str().unwrap().to_string()
    }

    async fn grant(&self, role_id: &str, ids: &[&str], division: &str) -> reqwest::Response {
        let body = json!({"subjectIds": ids, "divisionIds": [division]});
        let url = self.url_q(
            &format!("/api/v2/authorization/roles/{role_id}"),
            &[("subjectType", "PC_USER")],
        );
        self.req(Method::POST, url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn remove(&self, role_id: &str, ids: &[&str]) -> reqwest::Response {
        self.send_json(
            Method::PUT,
            &format!("/api/v2/authorization/roles/{role_id}/users/remove"),
            &json!(ids),
            None,
        )
        .await
    }
}

#[tokio::test]
async fn a_bulk_grant_shows_in_scim_roles_and_a_scim_role_shows_in_the_grants() {
    let emu = Emu::start(args()).await;
    let a = emu.create(user_body("a@example.com", "EMP-A")).await;
    let b = emu.create(user_body("b@example.com", "EMP-B")).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (_, etag_before) = emu.get_user(a).await;
    let agent = emu.role_id("Agent").await;
    let home = emu.home().await;

    let res = emu.grant(&agent, &[a, b], &home).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    let (user, etag_after) = emu.get_user(a).await;
    assert_eq!(role_names(&user), names(&["Agent", "Employee"]));
    assert_ne!(
        etag_before, etag_after,
        "a grant changes the user's version"
    );
    assert_eq!(
        role_names(&emu.get_user(b).await.0),
        names(&["Agent", "Employee"])
    );

    // Through SCIM the other way: the grants listing shows a role written by PATCH.
    let res = emu
        .patch(
            b,
            json!([{"op": "add", "path": "roles", "value": [{"value": "Supervisor"}]}]),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = emu
        .get(
            &format!("/api/v2/authorization/divisions/{home}/grants"),
            &[("pageSize", "500")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let grants: Value = res.json().await.unwrap();
    let of_b: BTreeSet<String> = grants["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["subjectId"] == b)
        .map(|g| g["role"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(of_b, names(&["Agent", "Employee", "Supervisor"]));
    assert_eq!(grants["total"], 5, "{grants}");

    // users/remove takes the role away, seen through SCIM.
    let res = emu.remove(&agent, &[a]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(role_names(&emu.get_user(a).await.0), names(&["Employee"]));
    emu.stop().await;
}

#[tokio::test]
async fn one_unknown_id_refuses_the_whole_batch() {
    let emu = Emu::start(args()).await;
    let a = emu.create(user_body("a@example.com", "EMP-A")).await;
    let a = a["id"].as_str().unwrap();
    let agent = emu.role_id("Agent").await;
    let home = emu.home().await;

    let res = emu.grant(&agent, &[a, "no-such-user"], &home).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "invalid.value");
    assert!(
        !body.to_string().contains("no-such-user"),
        "the refusal does not name the id: {body}"
    );
    assert_eq!(
        role_names(&emu.get_user(a).await.0),
        names(&["Employee"]),
        "nothing of a refused batch is applied"
    );
    let res = emu.remove(&agent, &[a, "no-such-user"]).await;
    assert_eq!(res.status(), 400);

    // A user deleted between a read and the write: staged, deleted when the write arrives.
    let (status, _) = emu
        .set_faults(json!({"delete_before_bulk_write": ["EMP-A"]}))
        .await;
    assert_eq!(status, 200);
    let res = emu.grant(&agent, &[a], &home).await;
    assert_eq!(res.status(), 400);
    let res = emu.get(&format!("{SCIM}/users/{a}"), &[]).await;
    assert_eq!(res.status(), 404);
    emu.stop().await;
}

#[tokio::test]
async fn bulk_grants_enforce_caps_divisions_roles_and_permissions() {
    let emu = Emu::start(EmulatorArgs {
        bulk_max_subjects: 2,
        grant_page_size_max: 3,
        ..args()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let u = emu
            .create(user_body(&format!("u{i}@example.com"), &format!("EMP-{i}")))
            .await;
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let agent = emu.role_id("Agent").await;
    let employee = emu.role_id("Employee").await;
    let home = emu.home().await;

    let res = emu.grant(&agent, &ids, &home).await;
    assert_eq!(res.status(), 400, "over --bulk-max-subjects");
    assert_eq!(emu.grant(&agent, &ids[..2], &home).await.status(), 204);
    assert_eq!(
        emu.grant(&agent, &ids[..1], "other-division")
            .await
            .status(),
        404
    );
    assert_eq!(
        emu.grant("no-such-role", &ids[..1], &home).await.status(),
        404
    );
    assert_eq!(emu.remove(&employee, &ids[..1]).await.status(), 400);
    let grants = |size: &'static str| {
        let path = format!("/api/v2/authorization/divisions/{home}/grants");
        let emu = &emu;
        async move { emu.get(&path, &[("pageSize", size)]).await }
    };
    assert_eq!(
        grants("4").await.status(),
        400,
        "over --grant-page-size-max"
    );
    let page: Value = grants("3").await.json().await.unwrap();
    assert_eq!(page["total"], 5);
    assert_eq!(page["pageCount"], 2);
    assert_eq!(page["entities"].as_array().unwrap().len(), 3);

    let (status, _) = emu
        .set_faults(
            json!({"missing_permissions": ["authorization:grant:add", "authorization:grant:view"]}),
        )
        .await;
    assert_eq!(status, 200);
    let res = emu.grant(&agent, &ids[..1], &home).await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "missing.permissions");
    assert_eq!(grants("3").await.status(), 403);
    assert_eq!(emu.remove(&agent, &ids[..1]).await.status(), 200);

    // Counted like every call.
    let stats: Value = emu
        .admin(Method::GET, "/emulator/stats", None)
        .await
        .json()
        .await
        .unwrap();
    let count = |method: &str, route: &str, status: u64| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["route"] == route && r["status"] == status)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert_eq!(
        count("POST", "/api/v2/authorization/roles/{roleId}", 204),
        1
    );
    assert_eq!(
        count("POST", "/api/v2/authorization/roles/{roleId}", 403),
        1
    );
    assert_eq!(
        count(
            "PUT",
            "/api/v2/authorization/roles/{roleId}/users/remove",
            200
        ),
        1
    );
    emu.stop().await;
}

#[tokio::test]
async fn bulk_grants_are_rate_limited_like_every_call() {
    let emu = Emu::start(EmulatorArgs {
        rate_limit_per_minute: 2,
        ..args()
    })
    .await;
    let a = emu.create(user_body("a@example.com", "EMP-A")).await;
    let a = a["id"].as_str().unwrap();
    // The create used one call of the window; the home division another.
    let home = emu.home().await;
    let res = emu.grant("any", &[a], &home).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    emu.stop().await;
}
