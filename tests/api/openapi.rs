//! The API document (`/openapi.json`) against the router that serves it, and the interactive
//! documentation at `/docs`, served from the binary alone.

use crate::helpers::spawn_app;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

/// The methods a route may answer (HEAD comes with GET in axum; OPTIONS and TRACE are never routed).
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The route paths of the router, from axum's `Debug` of it (`Node { paths: {RouteId(3):
/// "/v1/jobs", ...} }`): axum has no other way to list them. axum's own fallback routes are left
/// out.
fn router_paths(debug: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut rest = debug;
    while let Some(at) = rest.find("RouteId(") {
        rest = &rest[at..];
        let Some(open) = rest.find("): \"") else {
            break;
        };
        let after = &rest[open + 4..];
        let Some(close) = after.find('"') else {
            break;
        };
        let path = &after[..close];
        if !path.contains("__private__axum") {
            paths.insert(path.to_owned());
        }
        rest = &after[close..];
    }
    paths
}

/// `(METHOD, path)` of every operation of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, _) in item.as_object().into_iter().flatten() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Whether the path is served outside the document, by the router's explicit list.
fn undocumented(path: &str) -> bool {
    rolesync::http::UNDOCUMENTED_PREFIXES
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

#[tokio::test]
async fn the_router_answers_exactly_the_operations_of_the_document() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented = documented(&doc);
    assert!(
        documented.contains(&("POST".into(), "/v1/jobs".into())),
        "{documented:?}"
    );

    let paths = router_paths(&app.router_debug);
    assert!(
        paths.contains("/v1/jobs/{id}/items"),
        "no route paths could be read from the router's Debug (has axum's format changed?): {}",
        app.router_debug
    );
    // Every method of every route path, sent without a key: a route answers it (a /v1 route with
    // 401, before anything else), anything else is a 405, or the fallback's 404.
    let mut routed = BTreeSet::new();
    for path in paths.iter().filter(|p| !undocumented(p)) {
        let concrete = path.replace("{id}", "x").replace("{name}", "x");
        for method in METHODS {
            let resp = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{concrete}", app.address),
                )
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let fallback = status == 404 && body["detail"] == "no such endpoint";
            if status == 405 || fallback {
                continue;
            }
            if path.starts_with("/v1/") {
                assert_eq!(status, 401, "{method} {path} answered before the key check");
            }
            routed.insert((method.to_owned(), path.clone()));
        }
    }
    let undocumented_routes: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented_routes.is_empty(),
        "routes served but not in the document (add #[utoipa::path] and a routes! line in \
         src/http/mod.rs, or list a page in UNDOCUMENTED_PREFIXES): {undocumented_routes:?}"
    );
    let unserved: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unserved.is_empty(),
        "operations in the document that the router does not answer: {unserved:?}"
    );
}

#[tokio::test]
async fn the_document_describes_every_operation_with_its_errors_and_bodies() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let served: Value = resp.json().await.unwrap();
    // What is served is what the code generates.
    let generated = serde_json::to_value(rolesync::http::openapi_document()).unwrap();
    assert_eq!(served, generated);
    let doc = served;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["bearerFormat"],
        "JWT"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let name = format!("{method} {path}");
        assert!(op["summary"].is_string(), "{name}: no summary");
        assert!(
            operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
            "{name}: operationId {} is not unique",
            op["operationId"]
        );
        let responses = op["responses"].as_object().unwrap();
        if path.starts_with("/v1/") {
            assert_eq!(
                op["security"],
                serde_json::json!([{"bearer": []}, {"token": []}]),
                "{name}"
            );
            for code in ["401", "403", "500"] {
                assert!(responses.contains_key(code), "{name}: no {code}");
            }
            assert!(
                responses["401"]["headers"]["WWW-Authenticate"].is_object(),
                "{name}"
            );
        }
        for (code, response) in responses {
            if code.starts_with('2') || path == "/healthz" || path == "/readyz" {
                continue;
            }
            let problem = &response["content"]["application/problem+json"];
            assert_eq!(
                problem["schema"]["$ref"], "#/components/schemas/Problem",
                "{name} {code}: not a problem+json"
            );
            assert_eq!(
                problem["example"]["status"].as_u64(),
                code.parse::<u64>().ok(),
                "{name} {code}"
            );
            if code == "429" || code == "503" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{name} {code}"
                );
            }
        }
    }

    // The three formats of a batch, for both operations that take one.
    for path in ["/v1/jobs", "/v1/validate"] {
        let content = doc["paths"][path]["post"]["requestBody"]["content"]
            .as_object()
            .unwrap();
        let types: Vec<&str> = content.keys().map(String::as_str).collect();
        assert_eq!(
            types,
            ["application/json", "application/x-ndjson", "text/csv"],
            "{path}"
        );
        assert!(content["text/csv"]["example"].is_string(), "{path}");
    }
    let submit = &doc["paths"]["/v1/jobs"]["post"];
    for code in ["200", "202", "400", "413", "415", "422", "429", "503"] {
        assert!(
            submit["responses"][code].is_object(),
            "POST /v1/jobs: no {code}"
        );
    }
    assert!(submit["responses"]["202"]["headers"]["Location"].is_object());
    assert!(
        submit["description"]
            .as_str()
            .unwrap()
            .contains("roles:privileged")
    );
    let items = &doc["paths"]["/v1/jobs/{id}/items"]["get"]["responses"]["200"]["content"];
    assert!(items["application/json"].is_object() && items["text/csv"].is_object());

    // The bodies are typed: no free-form objects.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("Job", "policy_fingerprint"),
        ("Job", "estimate"),
        ("Item", "reason"),
        ("ValidationReport", "errors"),
        ("Policy", "tiers"),
        ("RoleDetail", "effective_permissions"),
        ("DeliveryList", "deliveries"),
        ("Delivery", "status"),
        ("Problem", "errors"),
        ("BatchEnvelope", "assignments"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} missing: {}",
            schemas[schema]
        );
    }
    for (path, schema) in [
        ("/v1/policy", "Policy"),
        ("/v1/policy/roles/{name}", "RoleDetail"),
        ("/v1/webhooks/deliveries", "DeliveryList"),
    ] {
        assert_eq!(
            doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["$ref"],
            format!("#/components/schemas/{schema}"),
            "{path}"
        );
    }
}

/// The page and every file it loads come from rolesync itself: no other host is named, so the
/// page works on a network that reaches nothing else.
#[tokio::test]
async fn the_docs_page_and_its_files_are_served_by_rolesync() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page_url = resp.url().clone();
    assert!(
        page_url.path().starts_with("/docs"),
        "redirected away: {page_url}"
    );
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();

    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            if let Some(end) = rest.find('"') {
                assets.push(rest[..end].to_owned());
            }
        }
    }
    assert!(
        assets.iter().any(|a| a.contains("swagger-ui-bundle.js")),
        "{html}"
    );
    assert!(assets.iter().any(|a| a.contains(".css")), "{html}");
    for asset in &assets {
        let url = page_url.join(asset).unwrap();
        assert_eq!(
            url.origin(),
            page_url.origin(),
            "{asset} is not served by rolesync"
        );
        let resp = app.client.get(url.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let bytes = resp.bytes().await.unwrap();
        assert!(!bytes.is_empty(), "{url} is empty");
    }

    // The script that starts Swagger UI reads this service's document, and asks no validator
    // elsewhere.
    let init = app
        .client
        .get(page_url.join("swagger-initializer.js").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let init = init.text().await.unwrap();
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
}
