//! Several OAuth clients and the log of accepted role writes (`GET /emulator/writes`), over real
//! HTTP. Each test starts its own emulator on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use genesys_cloud_emulator::{self as emulator, EmulatorArgs, EmulatorHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SCIM: &str = "/api/v2/scim/v2";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const DEFAULT: (&str, &str) = ("rolesync-dev", "rolesync-dev-secret");
const AUDITOR: (&str, &str) = ("auditor", "auditor:secret");

struct Emu {
    handle: EmulatorHandle,
    http: reqwest::Client,
}

/// One client's view: its bearer token and an optional `x-correlation-id`.
struct Caller<'a> {
    emu: &'a Emu,
    token: String,
}

async fn start(users: u64) -> Emu {
    let handle = emulator::spawn(EmulatorArgs {
        users,
        rate_limit_per_minute: 0,
        extra_clients: vec![(AUDITOR.0.into(), AUDITOR.1.into())],
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

    async fn token_status(&self, id: &str, secret: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap())
    }

    async fn caller(&self, (id, secret): (&str, &str)) -> Caller<'_> {
        let (status, body) = self.token_status(id, secret).await;
        assert_eq!(status, 200, "{body}");
        Caller {
            emu: self,
            token: body["access_token"].as_str().unwrap().to_string(),
        }
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

    async fn writes(&self, query: &str) -> Value {
        let (status, body) = self
            .admin(Method::GET, &format!("/emulator/writes{query}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `(id, externalId)` of every user, in creation order.
    async fn users(&self) -> Vec<(String, Value)> {
        let (_, body) = self.admin(Method::GET, "/emulator/users", None).await;
        body.as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["id"].as_str().unwrap().to_string(),
                    u["externalId"].clone(),
                )
            })
            .collect()
    }
}

impl Caller<'_> {
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut r = self
            .emu
            .http
            .request(method, self.emu.url(path))
            .query(query)
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(body.to_string());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }

    async fn patch(&self, id: &str, ops: Value, headers: &[(&str, &str)]) -> StatusCode {
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": ops});
        let path = format!("{SCIM}/users/{id}");
        self.send(Method::PATCH, &path, &[], &body, headers)
            .await
            .status()
    }

    async fn role_id(&self, name: &str) -> String {
        let res = self
            .send(
                Method::GET,
                "/api/v2/authorization/roles",
                &[("name", name)],
                &Value::Null,
                &[],
            )
            .await;
        let body: Value = res.json().await.unwrap();
        body["entities"][0]["id"].as_str().unwrap().to_string()
    }

    async fn home(&self) -> String {
        let path = "/api/v2/authorization/divisions/home";
        let res = self.send(Method::GET, path, &[], &Value::Null, &[]).await;
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    async fn grant(&self, role: &str, home: &str, ids: &[&str], headers: &[(&str, &str)]) -> u16 {
        let body = json!({"subjectIds": ids, "divisionIds": [home]});
        let path = format!("/api/v2/authorization/roles/{role}");
        let query = [("subjectType", "PC_USER")];
        let res = self.send(Method::POST, &path, &query, &body, headers).await;
        res.status().as_u16()
    }

    async fn remove(&self, role: &str, ids: &[&str], headers: &[(&str, &str)]) -> u16 {
        let path = format!("/api/v2/authorization/roles/{role}/users/remove");
        let res = self
            .send(Method::PUT, &path, &[], &json!(ids), headers)
            .await;
        res.status().as_u16()
    }
}

fn add_role(name: &str) -> Value {
    json!([{"op": "add", "path": "roles", "value": [{"value": name}]}])
}

/// An entry without its `at_ms`, which the test cannot know.
#[allow(clippy::too_many_arguments)]
fn expected(
    seq: u64,
    client: &str,
    via: &str,
    user: &str,
    ext: Value,
    before: &[&str],
    after: &[&str],
    correlation: Option<&str>,
) -> Value {
    json!({
        "seq": seq, "client_id": client, "via": via, "user_id": user, "external_id": ext,
        "roles_before": before, "roles_after": after, "correlation_id": correlation,
    })
}

fn without_at_ms(writes: &Value) -> Vec<Value> {
    writes["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let mut w = w.clone();
            let at = w.as_object_mut().unwrap().remove("at_ms").unwrap();
            assert!(at.as_u64().unwrap() > 1_600_000_000_000, "{at}");
            w
        })
        .collect()
}

fn seqs(page: &Value) -> Vec<u64> {
    page["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn accepted_role_writes_are_logged_with_their_client_and_nothing_else_is() {
    let emu = start(3).await;
    // Neither the seeded users nor an admin add log anything.
    let (status, _) = emu
        .admin(
            Method::POST,
            "/emulator/users",
            Some(json!([{"userName": "d@example.com", "externalId": "EMP-D",
                         "roles": [{"value": "Supervisor"}]}])),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        emu.writes("").await,
        json!({"writes": [], "last_seq": 0, "dropped": 0})
    );
    let users = emu.users().await;
    let [(u1, e1), (u2, e2), (u3, e3), (u4, _)] = &users[..] else {
        panic!("{users:?}")
    };
    let (u1, u2, u3, u4) = (u1.as_str(), u2.as_str(), u3.as_str(), u4.as_str());
    let dev = emu.caller(DEFAULT).await;
    let auditor = emu.caller(AUDITOR).await;
    let agent = auditor.role_id("Agent").await;
    let home = auditor.home().await;

    // 1: a SCIM PATCH by the default client.
    let corr = [("x-correlation-id", "corr-1")];
    let if_match = [("x-correlation-id", "corr-1"), ("if-match", "\"1\"")];
    assert_eq!(dev.patch(u1, add_role("Agent"), &if_match).await, 200);
    // Nothing: a no-op, a change of something else than roles, a stale If-Match, a faulted
    // PATCH, a refused bulk grant.
    assert_eq!(dev.patch(u1, add_role("Agent"), &corr).await, 200);
    let rename = json!([{"op": "replace", "path": "displayName", "value": "Renamed"}]);
    assert_eq!(dev.patch(u1, rename, &corr).await, 200);
    let stale = [("if-match", "\"99\"")];
    assert_eq!(dev.patch(u2, add_role("Agent"), &stale).await, 409);
    let (s, _) = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"reject_patch": 1.0})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(dev.patch(u2, add_role("Agent"), &[]).await, 400);
    let (s, _) = emu
        .admin(
            Method::POST,
            "/emulator/faults",
            Some(json!({"reject_patch": 0.0})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        auditor.grant(&agent, &home, &[u2, "nobody"], &[]).await,
        400
    );

    // 2, 3: a bulk grant by the other client; u1 already holds Agent and is not logged.
    let corr2 = [("x-correlation-id", "corr-2")];
    assert_eq!(
        auditor.grant(&agent, &home, &[u1, u2, u3], &corr2).await,
        204
    );
    // 4: users/remove; u4 lacks the role. An over-long correlation id is not kept.
    let long = "c".repeat(201);
    let corr3 = [("x-correlation-id", long.as_str())];
    assert_eq!(auditor.remove(&agent, &[u3, u4], &corr3).await, 200);
    // 5: a PUT (Employee is kept); 6: a create with roles.
    let put = json!({"userName": "emp-000002@example.com", "externalId": "EMP-000002",
                     "displayName": "Two", "roles": [{"value": "Supervisor"}]});
    let res = dev
        .send(Method::PUT, &format!("{SCIM}/users/{u2}"), &[], &put, &[])
        .await;
    assert_eq!(res.status(), 200);
    let new = json!({"userName": "new@example.com", "externalId": "EMP-NEW",
                     "displayName": "New", "roles": [{"value": "Agent"}]});
    let res = dev
        .send(
            Method::POST,
            &format!("{SCIM}/users"),
            &[],
            &new,
            &[("x-correlation-id", "corr-4")],
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let u5 = created["id"].as_str().unwrap();

    let (emp, agent_emp) = (["Employee"], ["Agent", "Employee"]);
    let all = emu.writes("").await;
    assert_eq!(all["last_seq"], 6, "{all}");
    assert_eq!(all["dropped"], 0);
    assert_eq!(
        without_at_ms(&all),
        [
            expected(
                1,
                DEFAULT.0,
                "scim_patch",
                u1,
                e1.clone(),
                &emp,
                &agent_emp,
                Some("corr-1")
            ),
            expected(
                2,
                AUDITOR.0,
                "bulk_grant",
                u2,
                e2.clone(),
                &emp,
                &agent_emp,
                Some("corr-2")
            ),
            expected(
                3,
                AUDITOR.0,
                "bulk_grant",
                u3,
                e3.clone(),
                &emp,
                &agent_emp,
                Some("corr-2")
            ),
            expected(
                4,
                AUDITOR.0,
                "bulk_remove",
                u3,
                e3.clone(),
                &agent_emp,
                &emp,
                None
            ),
            expected(
                5,
                DEFAULT.0,
                "scim_put",
                u2,
                e2.clone(),
                &agent_emp,
                &["Employee", "Supervisor"],
                None
            ),
            expected(
                6,
                DEFAULT.0,
                "scim_post",
                u5,
                json!("EMP-NEW"),
                &[],
                &agent_emp,
                Some("corr-4")
            ),
        ]
    );
    let at: Vec<u64> = all["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["at_ms"].as_u64().unwrap())
        .collect();
    assert!(at.is_sorted(), "{at:?}");

    // Paging.
    let page = emu.writes("?after=2&limit=2").await;
    assert_eq!((seqs(&page), &page["last_seq"]), (vec![3, 4], &json!(6)));
    assert_eq!(seqs(&emu.writes("?after=4").await), [5, 6]);
    assert_eq!(seqs(&emu.writes("?after=6").await), Vec::<u64>::new());
    let empty = emu.writes("?limit=0").await;
    assert_eq!((seqs(&empty), &empty["last_seq"]), (vec![], &json!(6)));
    for bad in ["after=-1", "after=x", "limit=100001", "limit=-1", "limit="] {
        let (status, _) = emu
            .admin(Method::GET, &format!("/emulator/writes?{bad}"), None)
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    // Not counted in the stats.
    let (_, stats) = emu.admin(Method::GET, "/emulator/stats", None).await;
    assert!(!stats.to_string().contains("/emulator/"), "{stats}");

    // Reset clears the log; seq starts again at 1.
    let (status, _) = emu.admin(Method::POST, "/emulator/reset", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        emu.writes("").await,
        json!({"writes": [], "last_seq": 0, "dropped": 0})
    );
    let dev = emu.caller(DEFAULT).await;
    let res = dev
        .send(Method::POST, &format!("{SCIM}/users"), &[], &new, &[])
        .await;
    assert_eq!(res.status(), 201);
    let after_reset = emu.writes("").await;
    assert_eq!(seqs(&after_reset), [1]);
    assert_eq!(after_reset["writes"][0]["roles_after"], json!(agent_emp));
    emu.handle.shutdown().await;
}

#[tokio::test]
async fn only_known_client_credentials_get_a_token() {
    let emu = start(1).await;
    for (id, secret) in [
        ("rolesync-dev", "wrong"),
        ("auditor", "wrong"),
        ("auditor", "auditor"),
        ("nobody", "auditor:secret"),
        ("auditor", "rolesync-dev-secret"),
    ] {
        let (status, body) = emu.token_status(id, secret).await;
        assert_eq!(status, 401, "{id}:{secret}");
        assert_eq!(body["code"], "bad.credentials");
    }
    // Both known clients get tokens, and both tokens work.
    for client in [DEFAULT, AUDITOR] {
        let caller = emu.caller(client).await;
        let res = caller
            .send(
                Method::GET,
                &format!("{SCIM}/users"),
                &[],
                &Value::Null,
                &[],
            )
            .await;
        assert_eq!(res.status(), 200, "{client:?}");
    }
    emu.handle.shutdown().await;
}

#[tokio::test]
async fn concurrent_writes_to_one_user_are_logged_in_the_order_they_took_effect() {
    let emu = start(1).await;
    let (id, _) = emu.users().await.remove(0);
    let dev = emu.caller(DEFAULT).await;
    let choices = ["Agent", "Supervisor", "Reporting", "Queue Member"];
    let writes = (0..48).map(|i| {
        let role = choices[i % choices.len()];
        let ops = json!([{"op": "replace", "path": "roles", "value": [{"value": role}]}]);
        let (dev, id) = (&dev, id.as_str());
        async move { dev.patch(id, ops, &[]).await }
    });
    for status in futures::future::join_all(writes).await {
        assert_eq!(status, 200);
    }
    let log = emu.writes("").await;
    let entries = log["writes"].as_array().unwrap();
    assert!(!entries.is_empty());
    // Each entry starts where the one before it ended.
    let mut current = json!(["Employee"]);
    for (i, w) in entries.iter().enumerate() {
        assert_eq!(w["seq"], i + 1);
        assert_eq!(w["roles_before"], current, "{log}");
        current = w["roles_after"].clone();
    }
    let (_, users) = emu.admin(Method::GET, "/emulator/users", None).await;
    assert_eq!(users[0]["roles"], current);
    emu.handle.shutdown().await;
}
