//! The emulator's answers on every endpoint rolesync uses, held against Genesys' published
//! models (`tests/models/genesys-models.json`, derived from the Python SDK; its source is
//! named in the file): no field the vendor's model lacks unless the README's "Departures from
//! Genesys' published models" names it (as `Model.field`), every value of the model's type,
//! and enumerated values inside the model's enum.

use genesys_cloud_emulator::EmulatorArgs;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

fn models() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/genesys-models.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `Model.field` departures the README names in its section.
fn departures() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Some(start) = readme.find("## Departures from Genesys' published models") else {
        panic!("README: no section \"Departures from Genesys' published models\"");
    };
    let section = &readme[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains('.') && s.chars().next().is_some_and(char::is_uppercase))
        .map(str::to_owned)
        .collect()
}

struct Checker {
    models: Value,
    departures: BTreeSet<String>,
    used_departures: BTreeSet<String>,
    problems: Vec<String>,
}

impl Checker {
    fn check(&mut self, what: &str, ty: &str, v: &Value, path: &str) {
        let fail = |c: &mut Checker, m: String| c.problems.push(format!("{what}: {path}: {m}"));
        if let Some(inner) = ty.strip_prefix("array<").and_then(|t| t.strip_suffix('>')) {
            match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(what, inner, item, &format!("{path}[{i}]"));
                    }
                }
                None => fail(self, format!("not an array ({ty})")),
            }
            return;
        }
        if let Some(inner) = ty.strip_prefix("map<").and_then(|t| t.strip_suffix('>')) {
            match v.as_object() {
                Some(map) => {
                    for (k, item) in map {
                        self.check(what, inner, item, &format!("{path}.{k}"));
                    }
                }
                None => fail(self, format!("not an object ({ty})")),
            }
            return;
        }
        let ok = match ty {
            "any" => true,
            "string" => v.is_string(),
            "datetime" => v.as_str().is_some_and(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            model => return self.model(what, model, v, path),
        };
        if !ok {
            fail(self, format!("{v} is not a {ty}"));
        }
    }

    fn model(&mut self, what: &str, model: &str, v: &Value, path: &str) {
        let Some(fields) = self.models["models"][model].as_object().cloned() else {
            self.problems.push(format!(
                "{what}: {path}: model {model} not in the models file"
            ));
            return;
        };
        let Some(object) = v.as_object() else {
            self.problems
                .push(format!("{what}: {path}: not an object ({model})"));
            return;
        };
        for (key, value) in object {
            let Some(field) = fields.get(key) else {
                let departure = format!("{model}.{key}");
                if self.departures.contains(&departure) {
                    self.used_departures.insert(departure);
                } else {
                    self.problems.push(format!(
                        "{what}: {path}.{key}: not in Genesys' {model}, and not a departure the README names"
                    ));
                }
                continue;
            };
            let ty = field["type"].as_str().unwrap_or("any").to_owned();
            self.check(what, &ty, value, &format!("{path}.{key}"));
            if let (Some(allowed), Some(s)) = (field["enum"].as_array(), value.as_str())
                && !allowed.iter().any(|a| a == s)
            {
                self.problems.push(format!(
                    "{what}: {path}.{key}: {s:?} is outside {model}.{key}'s enum"
                ));
            }
        }
    }
}

#[tokio::test]
async fn the_answers_on_rolesyncs_endpoints_match_genesys_published_models() {
    let emulator = genesys_cloud_emulator::spawn(EmulatorArgs {
        users: 3,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let base = emulator.base_url();
    let scim = format!("{base}/api/v2/scim/v2");
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth("rolesync-dev", Some("rolesync-dev-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let token = token["access_token"].as_str().expect("a token").to_owned();
    let send =
        |method: reqwest::Method, url: String, body: Option<Value>, if_match: Option<String>| {
            let mut req = http.request(method, url).bearer_auth(&token);
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            if let Some(v) = if_match {
                req = req.header("if-match", v);
            }
            async move {
                let resp = req.send().await.expect("an answer");
                let status = resp.status().as_u16();
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (status, etag, body)
            }
        };
    use reqwest::Method as M;
    // A user with every attribute rolesync could meet filled.
    let (status, _, created) = send(
        M::POST,
        format!("{scim}/users"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "full@example.com", "displayName": "Full", "externalId": "FULL-1",
            "title": "Agent", "active": true,
            "emails": [{"value": "full@example.com", "type": "work", "primary": true}],
            "phoneNumbers": [{"value": "+15550100", "type": "mobile"}],
            "roles": [{"value": "Agent"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                {"division": "Home", "department": "Sales", "employeeNumber": "7", "dateHire": "2024-01-02"},
            "urn:ietf:params:scim:schemas:extension:genesys:purecloud:2.0:User":
                {"routingSkills": [{"name": "Billing", "proficiency": 3.5}],
                 "routingLanguages": [{"name": "English", "proficiency": 5.0}],
                 "externalIds": [{"authority": "hr", "value": "7"}]}
        })),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let (_, etag, user) = send(M::GET, format!("{scim}/users/{id}"), None, None).await;
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "roles", "value": [{"value": "Supervisor"}]}]});
    let (_, _, patched) = send(
        M::PATCH,
        format!("{scim}/users/{id}"),
        Some(patch.clone()),
        etag.clone(),
    )
    .await;
    let (stale_status, _, stale) =
        send(M::PATCH, format!("{scim}/users/{id}"), Some(patch), etag).await;
    assert_eq!(stale_status, 409);
    let (_, _, list) = send(M::GET, format!("{scim}/users?count=10"), None, None).await;
    let (_, _, bad_filter) = send(
        M::GET,
        format!("{scim}/users?filter=userName%20co%20%22x%22"),
        None,
        None,
    )
    .await;
    let (page_status, _, page_rule) =
        send(M::GET, format!("{scim}/users?count=26"), None, None).await;
    assert_eq!(page_status, 429);
    let (_, _, spc) = send(M::GET, format!("{scim}/serviceproviderconfig"), None, None).await;
    let api = format!("{base}/api/v2/authorization");
    let (_, _, roles) = send(M::GET, format!("{api}/roles?pageSize=500"), None, None).await;
    let role_id = roles["entities"][1]["id"]
        .as_str()
        .expect("a role id")
        .to_owned();
    let (_, _, role) = send(M::GET, format!("{api}/roles/{role_id}"), None, None).await;
    let (_, _, home) = send(M::GET, format!("{api}/divisions/home"), None, None).await;
    let home_id = home["id"].as_str().expect("a division id").to_owned();
    let grant_body = json!({"subjectIds": [id], "divisionIds": [home_id]});
    let (grant_status, _, _) = send(
        M::POST,
        format!("{api}/roles/{role_id}?subjectType=PC_USER"),
        Some(grant_body),
        None,
    )
    .await;
    assert_eq!(grant_status, 204);
    let (_, _, grants) = send(
        M::GET,
        format!("{api}/divisions/{home_id}/grants?pageSize=500"),
        None,
        None,
    )
    .await;
    let (_, _, removed) = send(
        M::PUT,
        format!("{api}/roles/{role_id}/users/remove"),
        Some(json!([id])),
        None,
    )
    .await;
    let bad = json!({"subjectIds": [uuid::Uuid::new_v4().to_string()], "divisionIds": [home_id]});
    let (bad_status, _, refused) = send(
        M::POST,
        format!("{api}/roles/{role_id}?subjectType=PC_USER"),
        Some(bad),
        None,
    )
    .await;
    assert_eq!(bad_status, 400);
    let unauthenticated: Value = http
        .get(format!("{scim}/users"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    emulator.shutdown().await;

    let mut checker = Checker {
        models: models(),
        departures: departures(),
        used_departures: BTreeSet::new(),
        problems: Vec::new(),
    };
    for (what, model, body) in [
        ("POST /users", "ScimV2User", &created),
        ("GET /users/{id}", "ScimV2User", &user),
        ("PATCH /users/{id}", "ScimV2User", &patched),
        ("PATCH with a stale If-Match (409)", "ScimError", &stale),
        ("GET /users", "ScimUserListResponse", &list),
        (
            "GET /users with a bad filter (400)",
            "ScimError",
            &bad_filter,
        ),
        ("GET /users?count=26 (429)", "ErrorBody", &page_rule),
        (
            "GET /serviceproviderconfig",
            "ScimServiceProviderConfig",
            &spc,
        ),
        (
            "GET /authorization/roles",
            "OrganizationRoleEntityListing",
            &roles,
        ),
        (
            "GET /authorization/roles/{id}",
            "DomainOrganizationRole",
            &role,
        ),
        ("GET /authorization/divisions/home", "AuthzDivision", &home),
        (
            "GET /authorization/divisions/{id}/grants",
            "AuthzDivisionGrantEntityListing",
            &grants,
        ),
        (
            "PUT /authorization/roles/{id}/users/remove",
            "array<string>",
            &removed,
        ),
        (
            "POST /authorization/roles/{id} with a bad id (400)",
            "ErrorBody",
            &refused,
        ),
        (
            "GET /users without a token (401)",
            "ErrorBody",
            &unauthenticated,
        ),
    ] {
        checker.check(what, model, body, "body");
    }
    assert!(
        checker.problems.is_empty(),
        "{}",
        checker.problems.join("\n")
    );
    // Every departure the README names is still one (else the README is stale).
    let unused: Vec<&String> = checker
        .departures
        .difference(&checker.used_departures)
        .collect();
    assert!(
        unused.is_empty(),
        "README names departures the emulator no longer makes: {unused:?}"
    );
}
