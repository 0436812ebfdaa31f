//! The hand writer: an admin in the Genesys UI, as far as rolesync can tell. It changes random
//! users' roles every 0.5–2 s with the emulator's second OAuth client (`hand-writer`), through
//! the same two APIs rolesync uses:
//! - SCIM: GET the user (its ETag), PATCH `add` or `remove` one role of the catalog with
//!   `If-Match` (a 409 means someone wrote first: counted, not retried);
//! - Authorization API: a bulk grant (`POST …/roles/{id}?subjectType=PC_USER`) or a
//!   `PUT …/roles/{id}/users/remove` of one role for one user.
//!
//! Invariants: its writes compete with rolesync's for the same users, so the audit must tell
//! them apart (the emulator's write log names the client) and never blame rolesync for them.
//! It never touches `Employee` (the target refuses its removal). Its faults are the target's
//! faults: a failed call is counted and dropped.

use crate::Counters;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const CLIENT_ID: &str = "hand-writer";
pub const CLIENT_SECRET: &str = "hand-secret";

pub struct Hand {
    base: String,
    client: reqwest::Client,
    rng: StdRng,
    token: String,
    roles: BTreeMap<String, String>,
    home: String,
    users: Vec<String>,
    counters: Counters,
}

async fn token(client: &reqwest::Client, base: &str) -> Option<String> {
    let r = client
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["access_token"].as_str().map(str::to_owned)
}

impl Hand {
    /// Gets a token, the role catalog, the home division and the users' ids (from the
    /// emulator's admin listing, before any fault is on).
    pub async fn new(base: String, seed: u64, counters: Counters) -> Hand {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("http client");
        let token = token(&client, &base)
            .await
            .expect("the hand writer's token (needs the emulator's extra_clients)");
        let roles: Value = client
            .get(format!("{base}/api/v2/authorization/roles?pageSize=500"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET roles")
            .json()
            .await
            .expect("roles JSON");
        let roles = roles["entities"]
            .as_array()
            .expect("roles entities")
            .iter()
            .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r["id"].as_str()?.to_owned())))
            .filter(|(n, _)| n != "Employee")
            .collect();
        let home: Value = client
            .get(format!("{base}/api/v2/authorization/divisions/home"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET home division")
            .json()
            .await
            .expect("division JSON");
        let home = home["id"].as_str().expect("home division id").to_owned();
        let users: Value = client
            .get(format!("{base}/emulator/users"))
            .send()
            .await
            .expect("GET /emulator/users")
            .json()
            .await
            .expect("users JSON");
        let users = users
            .as_array()
            .expect("users array")
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect();
        Hand {
            base,
            client,
            rng: StdRng::seed_from_u64(seed),
            token,
            roles,
            home,
            users,
            counters,
        }
    }

    fn role(&mut self) -> (String, String) {
        let names: Vec<&String> = self.roles.keys().collect();
        let name = (*names.choose(&mut self.rng).expect("roles")).clone();
        let id = self.roles[&name].clone();
        (name, id)
    }

    async fn send(
        &mut self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Option<reqwest::Response> {
        self.counters.bump(&format!("hand.{what}.tried"));
        match req.bearer_auth(&self.token).send().await {
            Ok(r) if r.status().is_success() => Some(r),
            Ok(r) => {
                if r.status() == 401
                    && let Some(t) = token(&self.client, &self.base).await
                {
                    self.token = t;
                }
                self.counters
                    .bump(&format!("hand.{what}.answered_{}", r.status().as_u16()));
                None
            }
            Err(_) => {
                self.counters.bump(&format!("hand.{what}.no_answer"));
                None
            }
        }
    }

    /// One change to one random user.
    pub async fn step(&mut self) {
        let user = self.users.choose(&mut self.rng).expect("users").clone();
        let (role, role_id) = self.role();
        let scim = format!("{}/api/v2/scim/v2/users/{user}", self.base);
        match self.rng.random_range(0..10) {
            0..6 => {
                let get = self.client.get(&scim);
                let Some(r) = self.send(get, "scim_get").await else {
                    return;
                };
                let etag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let has = body["roles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["value"] == role.as_str());
                let op = if has {
                    json!({"op": "remove", "path": format!("roles[value eq \"{role}\"]")})
                } else {
                    json!({"op": "add", "path": "roles", "value": [{"value": role}]})
                };
                let patch = self
                    .client
                    .patch(&scim)
                    .header("if-match", etag)
                    .header("content-type", "application/scim+json")
                    .json(&json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [op],
                    }));
                let what = if has { "scim_remove" } else { "scim_add" };
                if self.send(patch, what).await.is_some() {
                    self.counters.bump(&format!("hand.{what}.ok"));
                }
            }
            6..8 => {
                let url = format!(
                    "{}/api/v2/authorization/roles/{role_id}?subjectType=PC_USER",
                    self.base
                );
                let body = json!({"subjectIds": [user], "divisionIds": [self.home]});
                let req = self.client.post(url).json(&body);
                if self.send(req, "bulk_grant").await.is_some() {
                    self.counters.bump("hand.bulk_grant.ok");
                }
            }
            _ => {
                let url = format!(
                    "{}/api/v2/authorization/roles/{role_id}/users/remove",
                    self.base
                );
                let req = self.client.put(url).json(&json!([user]));
                if self.send(req, "bulk_remove").await.is_some() {
                    self.counters.bump("hand.bulk_remove.ok");
                }
            }
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            self.step().await;
            let pause = Duration::from_millis(self.rng.random_range(500..2000));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
