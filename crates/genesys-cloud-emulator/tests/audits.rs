//! The audit trail and the audit query API (README, Audit trail) over real HTTP: every role
//! change by any path is audited naming its client; the realtime and async queries with their
//! limits; the service mapping; the permission; rate limits and stats. Each test starts its own
//! emulator on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use genesys_cloud_emulator::{self as emulator, EmulatorArgs, EmulatorHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SCIM: &str = "/api/v2/scim/v2";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const DEFAULT: (&str, &str) = ("rolesync-dev", "rolesync-dev-secret");
const ADMIN_TOOL: (&str, &str) = ("admin-tool", "admin-tool-secret");

struct Emu {
    handle: EmulatorHandle,
    http: reqwest::Client,
}

async fn start(users: u64, rate_limit_per_minute: u64) -> Emu {
    let handle = emulator::spawn(EmulatorArgs {
        users,
        rate_limit_per_minute,
        extra_clients: vec![(ADMIN_TOOL.0.into(), ADMIN_TOOL.1.into())],
        ..EmulatorArgs::default()
    })
    .await
    .unwrap();
    Emu {
        handle,
        http: reqwest::Client::new(),
    }
}

impl Emu {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url(), path)
    }

    async fn token(&self, (id, secret): (&str, &str)) -> String {
        let res = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = r.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.url(path));
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = r.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn users(&self) -> Vec<Value> {
        let (_, v) = self.admin(Method::GET, "/emulator/users", None).await;
        v.as_array().unwrap().clone()
    }

    async fn role_id(&self, token: &str, name: &str) -> String {
        let (_, v) = self
            .call(
                token,
                Method::GET,
                &format!("/api/v2/authorization/roles?name={name}"),
                None,
            )
            .await;
        v["entities"][0]["id"].as_str().unwrap().to_owned()
    }
}

fn iso(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn last_hour() -> String {
    let now = now_ms();
    format!("{}/{}", iso(now - 3_600_000), iso(now + 60_000))
}

async fn patch_roles(emu: &Emu, token: &str, id: &str, roles: &[&str]) {
    let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "roles",
        "value": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>()}]});
    let (s, v) = emu
        .call(
            token,
            Method::PATCH,
            &format!("{SCIM}/users/{id}"),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn realtime(emu: &Emu, token: &str, body: Value) -> (StatusCode, Value) {
    emu.call(
        token,
        Method::POST,
        "/api/v2/audits/query/realtime",
        Some(body),
    )
    .await
}

#[tokio::test]
async fn every_path_of_a_role_change_is_audited_naming_its_client() {
    let emu = start(3, 0).await;
    let (rs, tool) = (emu.token(DEFAULT).await, emu.token(ADMIN_TOOL).await);
    let users = emu.users().await;
    let ids: Vec<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    // rolesync: a SCIM PATCH; the admin tool: a PUT, a bulk grant, users/add, users/remove.
    patch_roles(&emu, &rs, &ids[0], &["Employee", "Agent"]).await;
    let (s, _) = emu
        .call(
            &tool,
            Method::PUT,
            &format!("{SCIM}/users/{}", ids[1]),
            Some(json!({
            "userName": "emp-000002@example.com", "displayName": "E2", "externalId": "EMP-000002",
            "roles": [{"value": "Employee"}, {"value": "Supervisor"}]})),
        )
        .await;
    assert_eq!(s, 200);
    let agent = emu.role_id(&tool, "Agent").await;
    let (_, home) = emu
        .call(
            &tool,
            Method::GET,
            "/api/v2/authorization/divisions/home",
            None,
        )
        .await;
    let (s, _) = emu
        .call(
            &tool,
            Method::POST,
            &format!("/api/v2/authorization/roles/{agent}?subjectType=PC_USER"),
            Some(json!({"subjectIds": [ids[2]], "divisionIds": [home["id"]]})),
        )
        .await;
    assert_eq!(s, 204);
    let sup = emu.role_id(&tool, "Supervisor").await;
    let (s, _) = emu
        .call(
            &tool,
            Method::PUT,
            &format!("/api/v2/authorization/roles/{sup}/users/add"),
            Some(json!([ids[2]])),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = emu
        .call(
            &tool,
            Method::PUT,
            &format!("/api/v2/authorization/roles/{agent}/users/remove"),
            Some(json!([ids[0]])),
        )
        .await;
    assert_eq!(s, 200);
    let body = json!({"interval": last_hour(), "serviceName": "PeoplePermissions",
        "sort": [{"name": "Timestamp", "sortOrder": "ascending"}], "pageSize": 500});
    let (s, v) = realtime(&emu, &rs, body).await;
    assert_eq!(s, 200, "{v}");
    let got: Vec<(String, String, String, String)> = v["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["client"]["id"].as_str().unwrap().to_owned(),
                m["action"].as_str().unwrap().to_owned(),
                m["entity"]["name"].as_str().unwrap().to_owned(),
                m["context"]["userId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |c: &str, a: &str, r: &str, u: &str| {
        (c.to_owned(), a.to_owned(), r.to_owned(), u.to_owned())
    };
    assert_eq!(
        got,
        vec![
            row("rolesync-dev", "MemberAdd", "Agent", &ids[0]),
            row("admin-tool", "MemberAdd", "Supervisor", &ids[1]),
            row("admin-tool", "MemberAdd", "Agent", &ids[2]),
            row("admin-tool", "MemberAdd", "Supervisor", &ids[2]),
            row("admin-tool", "MemberRemove", "Agent", &ids[0]),
        ]
    );
    assert_eq!(v["total"], 5);
    assert_eq!(v["pageCount"], 1);
    // The AuditLogMessage shape.
    let m = &v["entities"][0];
    for key in [
        "id",
        "userHomeOrgId",
        "remoteIp",
        "serviceName",
        "level",
        "eventDate",
        "message",
        "action",
        "entity",
        "entityType",
        "status",
        "propertyChanges",
        "context",
    ] {
        assert!(m.get(key).is_some(), "{key} missing from {m}");
    }
    assert_eq!(m["entityType"], "Role");
    assert_eq!(m["entity"]["id"], agent.as_str());
    assert_eq!(m["propertyChanges"][0]["newValues"][0], ids[0].as_str());
    // Filters: by client, by action, by entity id; descending by default.
    let by = |property: &str, value: &str| json!({"interval": last_hour(), "filters": [{"property": property, "value": value}]});
    let (_, v) = realtime(&emu, &rs, by("ClientId", "rolesync-dev")).await;
    assert_eq!(v["total"], 1);
    let (_, v) = realtime(&emu, &rs, by("Action", "MemberRemove")).await;
    assert_eq!(v["total"], 1);
    let (_, v) = realtime(&emu, &rs, by("EntityId", &sup)).await;
    assert_eq!(v["total"], 2);
    assert_eq!(
        v["entities"][0]["context"]["userId"],
        ids[2].as_str(),
        "newest first by default"
    );
    // A no-op writes no message.
    patch_roles(&emu, &rs, &ids[1], &["Employee", "Supervisor"]).await;
    let (_, v) = realtime(&emu, &rs, json!({"interval": last_hour()})).await;
    assert_eq!(v["total"], 5);
    emu.handle.shutdown().await;
}

#[tokio::test]
async fn the_realtime_query_keeps_its_limits_and_pages() {
    let emu = start(30, 0).await;
    let rs = emu.token(DEFAULT).await;
    for u in emu.users().await {
        patch_roles(&emu, &rs, u["id"].as_str().unwrap(), &["Employee", "Agent"]).await;
    }
    let now = now_ms();
    for (body, field) in [
        (json!({}), "interval"),
        (json!({"interval": "yesterday/today"}), "interval"),
        (
            json!({"interval": format!("{}/{}", iso(now), iso(now - 1000))}),
            "interval",
        ),
        (
            json!({"interval": format!("{}/{}", iso(now - 15 * 86_400_000), iso(now))}),
            "14 days",
        ),
        (
            json!({"interval": last_hour(), "pageSize": 501}),
            "pageSize",
        ),
        (
            json!({"interval": last_hour(), "pageNumber": 0}),
            "pageNumber",
        ),
        (
            json!({"interval": last_hour(), "filters": [{"property": "Colour", "value": "x"}]}),
            "property",
        ),
        (
            json!({"interval": last_hour(), "sort": [{"name": "Size"}]}),
            "sort",
        ),
    ] {
        let (s, v) = realtime(&emu, &rs, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (s, v) = realtime(
            &emu,
            &rs,
            json!({"interval": last_hour(), "pageSize": 8, "pageNumber": page,
            "sort": [{"name": "Timestamp", "sortOrder": "ascending"}]}),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(
            (v["total"].as_u64(), v["pageCount"].as_u64()),
            (Some(30), Some(4))
        );
        for m in v["entities"].as_array().unwrap() {
            seen.push(m["id"].as_str().unwrap().to_owned());
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 30);
    emu.handle.shutdown().await;
}

#[tokio::test]
async fn the_async_query_reaches_past_14_days_through_its_states_and_cursor() {
    let emu = start(5, 0).await;
    let (rs, tool) = (emu.token(DEFAULT).await, emu.token(ADMIN_TOOL).await);
    for u in emu.users().await {
        patch_roles(
            &emu,
            &tool,
            u["id"].as_str().unwrap(),
            &["Employee", "Agent"],
        )
        .await;
    }
    // 20 days pass: the messages fall out of the realtime query's reach.
    let (s, v) = emu
        .admin(
            Method::POST,
            "/emulator/audits",
            Some(json!({"backdate_secs": 20 * 86_400, "query_polls": 2})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"], 5);
    let now = now_ms();
    let old = format!("{}/{}", iso(now - 21 * 86_400_000), iso(now));
    let (s, _) = realtime(&emu, &rs, json!({"interval": old})).await;
    assert_eq!(s, 400);
    let (s, status) = emu
        .call(
            &rs,
            Method::POST,
            "/api/v2/audits/query",
            Some(json!({"interval": old, "serviceName": "PeoplePermissions"})),
        )
        .await;
    assert_eq!(s, 202, "{status}");
    assert_eq!(status["state"], "Queued");
    let id = status["id"].as_str().unwrap().to_owned();
    let (s, _) = emu
        .call(
            &rs,
            Method::GET,
            &format!("/api/v2/audits/query/{id}/results"),
            None,
        )
        .await;
    assert_eq!(s, 400, "results before Succeeded");
    let mut states = Vec::new();
    for _ in 0..3 {
        let (_, v) = emu
            .call(
                &rs,
                Method::GET,
                &format!("/api/v2/audits/query/{id}"),
                None,
            )
            .await;
        states.push(v["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(states, ["Queued", "Running", "Succeeded"]);
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (s, v) = emu
            .call(
                &rs,
                Method::GET,
                &format!("/api/v2/audits/query/{id}/results?pageSize=2{q}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        all.extend(v["entities"].as_array().unwrap().clone());
        match v["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|m| m["client"]["id"] == "admin-tool"));
    let (s, _) = emu
        .call(
            &rs,
            Method::GET,
            &format!("/api/v2/audits/query/{id}/results?cursor=nonsense"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = emu
        .call(&rs, Method::GET, "/api/v2/audits/query/no-such-query", None)
        .await;
    assert_eq!(s, 404);
    // A staged failure: new queries end Failed.
    emu.admin(
        Method::POST,
        "/emulator/audits",
        Some(json!({"fail_queries": true, "query_polls": 0})),
    )
    .await;
    let (_, status) = emu
        .call(
            &rs,
            Method::POST,
            "/api/v2/audits/query",
            Some(json!({"interval": old})),
        )
        .await;
    assert_eq!(status["state"], "Failed");
    let (s, _) = emu
        .admin(
            Method::POST,
            "/emulator/audits",
            Some(json!({"backdate_secs": -1})),
        )
        .await;
    assert_eq!(s, 400);
    emu.handle.shutdown().await;
}

#[tokio::test]
async fn the_audit_api_needs_its_permission_and_is_rate_limited_and_counted() {
    let emu = start(1, 3).await;
    let rs = emu.token(DEFAULT).await;
    let (s, v) = emu
        .call(
            &rs,
            Method::GET,
            "/api/v2/audits/query/realtime/servicemapping",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["services"][0]["name"], "PeoplePermissions");
    assert_eq!(v["services"][0]["entities"][0]["name"], "Role");
    let (s, _) = emu
        .call(
            &rs,
            Method::GET,
            "/api/v2/audits/query/servicemapping",
            None,
        )
        .await;
    assert_eq!(s, 200);
    emu.admin(
        Method::POST,
        "/emulator/faults",
        Some(json!({"missing_permissions": ["audits:audit:view"]})),
    )
    .await;
    let (s, v) = realtime(&emu, &rs, json!({"interval": last_hour()})).await;
    assert_eq!(s, 403);
    assert!(v["message"].as_str().unwrap().contains("audits:audit:view"));
    let (s, _) = realtime(&emu, &rs, json!({"interval": last_hour()})).await;
    assert_eq!(s, 429, "the fourth call of the minute");
    let (_, stats) = emu.admin(Method::GET, "/emulator/stats", None).await;
    let count = |route: &str, status: u64| {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["route"] == route && r["status"] == status)
            .map(|r| r["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("/api/v2/audits/query/realtime", 403), 1);
    assert_eq!(count("/api/v2/audits/query/realtime", 429), 1);
    assert_eq!(
        count("/api/v2/audits/query/realtime/servicemapping", 200),
        1
    );
    emu.handle.shutdown().await;
}

async fn person_token(emu: &Emu, body: Value) -> (StatusCode, Value) {
    emu.admin(Method::POST, "/emulator/tokens", Some(body))
        .await
}

#[tokio::test]
async fn a_persons_token_is_audited_naming_the_person_and_the_client() {
    let emu = start(2, 0).await;
    let users = emu.users().await;
    let (u1, u2) = (
        users[0]["id"].as_str().unwrap().to_owned(),
        users[1]["id"].as_str().unwrap().to_owned(),
    );
    let (s, v) = person_token(
        &emu,
        json!({"user": {"id": "person-1", "name": "Ada Admin"}, "client_id": ADMIN_TOOL.0}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    let ada = v["access_token"].as_str().unwrap().to_owned();
    // Through SCIM and through the Authorization API.
    patch_roles(&emu, &ada, &u1, &["Agent"]).await;
    let agent = emu.role_id(&ada, "Agent").await;
    let (s, v) = emu
        .call(
            &ada,
            Method::PUT,
            &format!("/api/v2/authorization/roles/{agent}/users/add"),
            Some(json!([u2])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // A client-credentials change beside them: no user.
    let tool = emu.token(ADMIN_TOOL).await;
    patch_roles(&emu, &tool, &u1, &["Agent", "Reporting"]).await;
    let (s, v) = realtime(
        &emu,
        &tool,
        json!({"interval": last_hour(), "filters": [{"property": "UserId", "value": "person-1"}],
               "sort": [{"name": "Timestamp", "sortOrder": "ascending"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let by_person = v["entities"].as_array().unwrap();
    assert_eq!(by_person.len(), 2, "{v:#}");
    for (m, (subject, via)) in by_person
        .iter()
        .zip([(&u1, "scim_patch"), (&u2, "bulk_grant")])
    {
        assert_eq!(
            m["user"],
            json!({"id": "person-1", "name": "Ada Admin", "selfUri": "/api/v2/users/person-1"})
        );
        assert_eq!(m["client"]["id"], ADMIN_TOOL.0);
        assert_eq!(m["context"]["userId"], subject.as_str());
        assert_eq!(m["context"]["via"], via);
    }
    let (_, all) = realtime(&emu, &tool, json!({"interval": last_hour()})).await;
    let without_user: Vec<&Value> = all["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("user").is_none())
        .collect();
    assert_eq!(without_user.len(), 1, "{all:#}");
    assert_eq!(without_user[0]["client"]["id"], ADMIN_TOOL.0);
    // The default client when none is named; bad requests change nothing.
    let (s, _) = person_token(&emu, json!({"user": {"id": "p2", "name": "Bo"}})).await;
    assert_eq!(s, 200);
    for bad in [
        json!({"user": {"id": "", "name": "x"}}),
        json!({"user": {"id": "p", "name": ""}}),
        json!({"user": {"id": "x".repeat(129), "name": "x"}}),
        json!({"user": {"id": "p", "name": "x"}, "client_id": "nobody"}),
        json!({"user": {"id": "p", "name": "x"}, "client_id": 3}),
        json!({"user": "p"}),
        json!("not an object"),
    ] {
        let (s, v) = person_token(&emu, bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let resp = emu
        .http
        .post(emu.url("/emulator/tokens"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    emu.handle.shutdown().await;
}

#[tokio::test]
async fn the_audit_knobs_rename_what_is_written_and_delay_what_is_queryable() {
    let emu = start(1, 0).await;
    let id = emu.users().await[0]["id"].as_str().unwrap().to_owned();
    let tool = emu.token(ADMIN_TOOL).await;
    patch_roles(&emu, &tool, &id, &["Agent"]).await;
    let (s, v) = emu
        .admin(
            Method::POST,
            "/emulator/audits",
            Some(json!({"entity_type": "User", "add_action": "RoleAssigned", "remove_action": "RoleUnassigned"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["entity_type"], "User");
    let (_, v) = realtime(&emu, &tool, json!({"interval": last_hour()})).await;
    assert_eq!(v["entities"][0]["entityType"], "User", "{v}");
    assert_eq!(v["entities"][0]["action"], "RoleAssigned");
    let filtered = |property: &str, value: &str| json!({"interval": last_hour(), "filters": [{"property": property, "value": value}]});
    let (_, v) = realtime(&emu, &tool, filtered("EntityType", "Role")).await;
    assert_eq!(v["total"], 0);
    let (_, v) = realtime(&emu, &tool, filtered("Action", "roleassigned")).await;
    assert_eq!(v["total"], 1);
    let (_, v) = emu
        .call(
            &tool,
            Method::GET,
            "/api/v2/audits/query/realtime/servicemapping",
            None,
        )
        .await;
    assert_eq!(
        v["services"][0]["entities"][0],
        json!({"name": "User", "actions": ["RoleAssigned", "RoleUnassigned"]})
    );
    // A delay: the change is queryable only that long after it was made.
    let (s, _) = emu
        .admin(
            Method::POST,
            "/emulator/audits",
            Some(json!({"delay_ms": 1_500})),
        )
        .await;
    assert_eq!(s, 200);
    let made = std::time::Instant::now();
    patch_roles(&emu, &tool, &id, &["Agent", "Reporting"]).await;
    let (_, v) = realtime(&emu, &tool, json!({"interval": last_hour()})).await;
    assert_eq!(v["total"], 0, "{v}");
    let deadline = made + std::time::Duration::from_secs(30);
    loop {
        let (_, v) = realtime(&emu, &tool, json!({"interval": last_hour()})).await;
        if v["total"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(made.elapsed() >= std::time::Duration::from_millis(1_500));
    // Bad values change nothing; the reset puts the knobs back.
    for bad in [
        json!({"entity_type": ""}),
        json!({"add_action": "has space"}),
        json!({"remove_action": "x".repeat(65)}),
        json!({"delay_ms": -1}),
        json!({"delay_ms": 600_001}),
        json!({"entity_type": "Role", "delay_ms": "soon"}),
    ] {
        let (s, _) = emu
            .admin(Method::POST, "/emulator/audits", Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad}");
    }
    let (_, v) = emu.admin(Method::GET, "/emulator/audits", None).await;
    assert_eq!(
        (v["entity_type"].as_str(), v["delay_ms"].as_i64()),
        (Some("User"), Some(1_500))
    );
    emu.admin(Method::POST, "/emulator/reset", None).await;
    let (_, v) = emu.admin(Method::GET, "/emulator/audits", None).await;
    assert_eq!(
        v,
        json!({"messages": 0, "fail_queries": false, "query_polls": 0, "entity_type": "Role",
               "add_action": "MemberAdd", "remove_action": "MemberRemove", "delay_ms": 0})
    );
    emu.handle.shutdown().await;
}
