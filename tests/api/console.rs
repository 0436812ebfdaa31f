//! The read-only console at `/ui`: sign-in with an API key (good, bad, without `jobs:read`),
//! the cookie's flags, pages behind the sign-in, posts from another site refused, escaping of
//! what a batch carries, and every number on a page equal to the API's. Then the same pages in
//! a real browser (Debian's chromium driven by playwright, `tests/browser/console_check.py`).

use crate::helpers::*;
use serde_json::Value;
use std::path::PathBuf;

/// A client that shows redirects instead of following them.
fn browserless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(app: &TestApp, key: &str) -> reqwest::Response {
    browserless()
        .post(format!("{}/ui/login", app.address))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap()
}

/// The `name=value` pair the sign-in set, for the `Cookie` header.
pub(crate) async fn signed_in(app: &TestApp, key: &str) -> String {
    let resp = sign_in(app, key).await;
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

pub async fn visit(app: &TestApp, cookie: &str, path: &str) -> reqwest::Response {
    browserless()
        .get(format!("{}{path}", app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// A page's HTML, which must have answered 200 with the console's headers.
pub(crate) async fn html(app: &TestApp, cookie: &str, path: &str) -> String {
    let resp = visit(app, cookie, path).await;
    assert_eq!(resp.status(), 200, "{path}");
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'none'"),
        "{csp}"
    );
    assert_eq!(h["cache-control"], "no-store");
    resp.text().await.unwrap()
}

/// The text of each element `data-field="{name}"` in `html`, in order.
fn fields(html: &str, name: &str) -> Vec<String> {
    let marker = format!("data-field=\"{name}\">");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            rest[..rest.find('<').unwrap()].to_owned()
        })
        .collect()
}

pub(crate) fn field(html: &str, name: &str) -> String {
    let all = fields(html, name);
    assert_eq!(all.len(), 1, "one {name} on the page");
    all[0].clone()
}

/// The JSON value at a dotted path, as the page prints it.
fn api(v: &Value, path: &str) -> String {
    let v = path.split('.').fold(v, |v, k| &v[k]);
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        // As Rust prints a number: 12, 0, 2.5 (serde_json would write 0.0 for a float).
        Value::Number(n) => n
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| n.as_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn a_good_key_signs_in_with_a_locked_down_cookie_and_a_bad_one_does_not() {
    let app = spawn_app_with(TestOptions {
        config: format!(
            "[[auth.keys]]\nname = \"reader\"\nkey_sha256 = \"{}\"\nscopes = [\"jobs:read\"]\n\
             [[auth.keys]]\nname = \"uploader\"\nkey_sha256 = \"{}\"\nscopes = [\"jobs:write\"]\n",
            rolesync::http::auth::key_digest_hex(READER_KEY),
            rolesync::http::auth::key_digest_hex("upload-only-key"),
        ),
        ..TestOptions::default()
    })
    .await;

    let resp = sign_in(&app, READER_KEY).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/jobs?signed_in");
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let flags: Vec<&str> = set.split("; ").skip(1).collect();
    assert_eq!(
        flags,
        [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/ui",
            "Max-Age=28800"
        ],
        "{set}"
    );
    assert!(
        !set.contains(READER_KEY),
        "the key is not in the cookie in clear"
    );
    let cookie = set.split(';').next().unwrap();
    let jobs = html(&app, cookie, "/ui/jobs?signed_in").await;
    assert!(jobs.contains("<span id=\"signed-in-as\">reader</span>"));

    for (key, status, why) in [
        ("not-a-key", 401, "That API key is not valid."),
        ("", 401, "That API key is not valid."),
        (
            "upload-only-key",
            403,
            "That API key lacks the jobs:read scope the console needs.",
        ),
    ] {
        let resp = sign_in(&app, key).await;
        assert_eq!(resp.status(), status, "{key}");
        assert!(resp.headers().get("set-cookie").is_none(), "{key}");
        assert!(resp.text().await.unwrap().contains(why), "{key}");
    }
    // A cookie made by hand for that key opens nothing either.
    let handmade = format!("rolesync_console={}", base64_url("upload-only-key"));
    let resp = visit(&app, &handmade, "/ui/jobs").await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("jobs:read"));
    // A key far beyond any real one is refused without being hashed, and a form beyond the
    // bound is refused before it is read.
    assert_eq!(sign_in(&app, &"k".repeat(2000)).await.status(), 401);
    assert_eq!(sign_in(&app, &"k".repeat(10_000)).await.status(), 413);
    // Posts that are not the form: their 4xx, on the sign-in page.
    for (content_type, body, status) in [
        ("application/x-www-form-urlencoded", "other=1", 422),
        ("application/json", "{\"key\": \"x\"}", 415),
    ] {
        let resp = browserless()
            .post(format!("{}/ui/login", app.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{content_type}");
        assert!(resp.headers().get("set-cookie").is_none());
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("The sign-in form could not be read"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn pages_need_a_sign_in_and_sign_out_forgets_it() {
    let app = spawn_app().await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nE1,Agent,Standard Agent\n")
        .await;
    let id = job["job_id"].as_str().unwrap();
    let forged = format!(
        "rolesync_console={}",
        base64_url("test-reader-key-but-wrong")
    );
    for path in [
        "/ui/jobs".to_owned(),
        format!("/ui/jobs/{id}"),
        format!("/ui/jobs/{id}/rejected.csv"),
        "/ui/policy".to_owned(),
    ] {
        for cookie in [
            "",
            "rolesync_console=",
            "rolesync_console=%%",
            forged.as_str(),
        ] {
            let resp = visit(&app, cookie, &path).await;
            assert_eq!(resp.status(), 303, "{path} with {cookie:?}");
            assert_eq!(resp.headers()["location"], "/ui/login", "{path}");
        }
    }
    // A sign-in whose cookie the browser did not keep (Secure over plain http) says so.
    let resp = visit(&app, "", "/ui/jobs?signed_in").await;
    assert_eq!(resp.headers()["location"], "/ui/login?cookie_refused");
    let form = html(&app, "", "/ui/login?cookie_refused").await;
    assert!(form.contains("over https"));
    // The bare /ui goes to the jobs (and from there to the sign-in).
    assert_eq!(
        visit(&app, "", "/ui").await.headers()["location"],
        "/ui/jobs"
    );

    let cookie = signed_in(&app, ADMIN_KEY).await;
    assert_eq!(visit(&app, &cookie, "/ui/jobs").await.status(), 200);
    let resp = browserless()
        .post(format!("{}/ui/logout", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/login");
    assert_eq!(
        resp.headers()["set-cookie"],
        "rolesync_console=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0"
    );
    // The stylesheet is the one thing served without a sign-in.
    let css = visit(&app, "", "/ui/console.css").await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn posts_from_another_site_are_refused() {
    let app = spawn_app().await;
    let cookie = signed_in(&app, READER_KEY).await;
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let resp = browserless()
            .post(format!("{}/ui/login", app.address))
            .header(header, value)
            .form(&[("key", READER_KEY)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{header}: {value}");
        assert!(resp.headers().get("set-cookie").is_none());
        let resp = browserless()
            .post(format!("{}/ui/logout", app.address))
            .header("cookie", &cookie)
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "sign-out, {header}: {value}");
        assert!(resp.headers().get("set-cookie").is_none());
    }
    // The console's own form, as a browser sends it.
    let own = app.address.trim_start_matches("http://").to_owned();
    let resp = browserless()
        .post(format!("{}/ui/login", app.address))
        .header("origin", format!("http://{own}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("key", READER_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn what_a_batch_carries_is_shown_as_text_never_as_markup() {
    let app = spawn_app().await;
    let hostile_id = "<script>alert(\"x\")</script>";
    let hostile_role = "\"><img src=x onerror=alert(1)>";
    let job = app
        .submit_csv(
            "external_id,role_template,license_tier\n\
             \"<script>alert(\"\"x\"\")</script>\",Agent,Platinum\n\
             S2,\"\"\"><img src=x onerror=alert(1)>\",Standard Agent\n",
        )
        .await;
    let id = job["job_id"].as_str().unwrap();
    app.wait_finished(id).await;
    let items = app.items(id).await;
    assert_eq!(items[0]["external_id"], hostile_id, "the row kept its id");
    assert_eq!(items[1]["role_template"], hostile_role);

    let cookie = signed_in(&app, READER_KEY).await;
    let page = html(&app, &cookie, &format!("/ui/jobs/{id}")).await;
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
    assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    // A hostile job id in the URL is echoed escaped too (in the 404).
    let resp = visit(&app, &cookie, "/ui/jobs/%3Cscript%3Ex%3C%2Fscript%3E").await;
    assert_eq!(resp.status(), 404);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("<script") && text.contains("&lt;script&gt;"),
        "{text}"
    );
}

/// The figures the job page and the jobs list print, each next to the API's.
const JOB_FIELDS: [&str; 18] = [
    "status",
    "counts.total",
    "counts.applied",
    "counts.unchanged",
    "counts.rejected",
    "counts.not_found",
    "counts.failed",
    "counts.cancelled",
    "counts.pending",
    "rows_per_sec",
    "scim.requests",
    "scim.retries",
    "scim.rate_limited",
    "users.total",
    "users.changed",
    "users.unchanged",
    "estimate.reads",
    "estimate.writes_max",
];

#[tokio::test]
async fn the_numbers_on_the_pages_are_the_apis() {
    let app = spawn_app().await;
    let users = seed_n(&app, "C", 30).await;
    // 30 rows that apply, and 60 rejected ones: more than a page (50) of rejected rows.
    let mut csv = csv_for(&users, "Agent", "Standard Agent");
    for i in 0..60 {
        csv.push_str(&format!("\nX{i:03},Astronaut,Standard Agent"));
    }
    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let api_job = app.wait_finished(&id).await;
    assert_eq!(api_job["counts"]["applied"], 30);
    assert_eq!(api_job["counts"]["rejected"], 60);

    let cookie = signed_in(&app, READER_KEY).await;
    let page = html(&app, &cookie, &format!("/ui/jobs/{id}")).await;
    for f in JOB_FIELDS {
        assert_eq!(field(&page, f), api(&api_job, f), "{f}");
    }
    for f in [
        "estimate.lookups",
        "estimate.strategy",
        "estimate.requests_per_minute",
    ] {
        assert_eq!(field(&page, f), api(&api_job, f), "{f}");
    }
    assert_eq!(field(&page, "paused_reason"), "—");
    assert_eq!(field(&page, "target.requests_per_minute"), "60000");
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "a finished job does not reload"
    );

    // The jobs list: the same figures in the job's row.
    let list = html(&app, &cookie, "/ui/jobs").await;
    let row_at = list.find(&format!("<tr data-job=\"{id}\">")).unwrap();
    let row = &list[row_at..row_at + list[row_at..].find("</tr>").unwrap()];
    for f in &JOB_FIELDS[..10] {
        assert_eq!(field(row, f), api(&api_job, f), "list {f}");
    }

    // The rejected rows, paged: 50 then 10, the same rows and reasons as the API's.
    let api_rejected: Vec<(String, String)> = app
        .items(&id)
        .await
        .into_iter()
        .filter(|i| i["outcome"] == "rejected")
        .map(|i| {
            (
                i["external_id"].as_str().unwrap().to_owned(),
                i["reason"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let first = rejected_rows(&page);
    assert_eq!(first.len(), 50);
    let next = page
        .split("id=\"more-rejected\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let second_page = html(&app, &cookie, &next).await;
    assert!(!second_page.contains("id=\"more-rejected\""));
    assert!(second_page.contains("id=\"first-rejected\""));
    let second = rejected_rows(&second_page);
    assert_eq!([first, second].concat(), api_rejected);
    assert_eq!(
        visit(&app, &cookie, &format!("/ui/jobs/{id}?after=x"))
            .await
            .status(),
        400
    );

    // The CSV link: the API's CSV of the rejected rows, byte for byte.
    let link = page
        .split("id=\"rejected-csv\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(link, format!("/ui/jobs/{id}/rejected.csv"));
    let from_console = visit(&app, &cookie, &link).await;
    assert_eq!(from_console.status(), 200);
    assert_eq!(
        from_console.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let from_console = from_console.text().await.unwrap();
    let from_api = app
        .client
        .get(format!(
            "{}/v1/jobs/{id}/items?outcome=rejected",
            app.address
        ))
        .bearer_auth(READER_KEY)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(from_console, from_api);
    assert_eq!(from_console.lines().count(), 61);

    // The policy page: the policy's fingerprint and its tiers, roles and SoD rules.
    let policy: Value = app
        .get("/v1/policy", READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    let page = html(&app, &cookie, "/ui/policy").await;
    assert_eq!(field(&page, "fingerprint"), api(&policy, "fingerprint"));
    for list in ["tiers", "roles", "sod"] {
        let n = policy[list].as_array().unwrap().len();
        assert_eq!(
            field(&page, &format!("{list}.length")),
            n.to_string(),
            "{list}"
        );
    }
    // Supervisor inherits Agent and Reporting, as the API says.
    assert!(page.contains("<tr><td>Supervisor</td><td>Agent, Reporting</td>"));
}

/// The rejected rows on a job page: (external id, reason code), in order.
fn rejected_rows(page: &str) -> Vec<(String, String)> {
    let Some(start) = page.find("<table id=\"rejected\">") else {
        return Vec::new();
    };
    let table = &page[start..start + page[start..].find("</table>").unwrap()];
    table
        .split("<tr>")
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row
                .split("<td")
                .skip(1)
                .map(|c| {
                    let c = &c[c.find('>').unwrap() + 1..];
                    &c[..c.find("</td>").unwrap()]
                })
                .collect();
            (
                cells[1].to_owned(),
                cells[4]
                    .trim_start_matches("<code>")
                    .trim_end_matches("</code>")
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_job_not_over_reloads_its_page_and_shows_why_it_waits() {
    let app = spawn_app().await;
    app.seed(&[("P1", &["Employee"])]).await;
    // A privileged grant from a key without `roles:privileged`: held for approval.
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(PLAIN_WRITER_KEY)
        .header("content-type", "text/csv")
        .body("external_id,role_template,license_tier\nP1,System Administrator,Administrator\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api_job = app.wait_for(&id, &["awaiting_approval"]).await;
    let cookie = signed_in(&app, READER_KEY).await;
    let page = html(&app, &cookie, &format!("/ui/jobs/{id}")).await;
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert_eq!(field(&page, "status"), "awaiting_approval");
    assert_eq!(field(&page, "approval.required"), "true");
    assert!(page.contains("privileged_roles"), "the reason it waits");
    for f in JOB_FIELDS {
        assert_eq!(field(&page, f), api(&api_job, f), "{f}");
    }
    let list = html(&app, &cookie, "/ui/jobs").await;
    assert!(list.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    // A later page of rejected rows is read without reloads.
    let later = html(&app, &cookie, &format!("/ui/jobs/{id}?after=1")).await;
    assert!(!later.contains("http-equiv=\"refresh\""));
}

#[tokio::test]
async fn a_paused_job_shows_why_as_the_api_does() {
    let app = spawn_app_with(TestOptions {
        config: "[target]\nmax_attempts = 2\nmax_retry_secs = 1\n".into(),
        ..TestOptions::default()
    })
    .await;
    let users = seed_n(&app, "Q", 5).await;
    // The target is down for longer than the test: the job pauses and stays paused.
    app.set_faults(serde_json::json!({"outage_secs": 120}))
        .await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let api_job = app.wait_for(&id, &["paused"]).await;
    let cookie = signed_in(&app, READER_KEY).await;
    let page = html(&app, &cookie, &format!("/ui/jobs/{id}")).await;
    assert_eq!(field(&page, "status"), "paused");
    assert_eq!(field(&page, "paused_reason"), "target_unavailable");
    assert_eq!(
        field(&page, "paused_reason"),
        api(&api_job, "paused_reason")
    );
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    let list = html(&app, &cookie, "/ui/jobs").await;
    assert!(list.contains("<td data-field=\"status\">paused</td>"));
}

// ----- in a real browser --------------------------------------------------------------------

/// A Python with playwright (`ROLESYNC_TEST_PYTHON`, set by `.ci/run`; else the venv it makes
/// under `target/ci-venv`) and a chromium (`ROLESYNC_TEST_CHROMIUM`, else `chromium` on the
/// PATH). None, with the reason printed, when either is missing — except in CI (`CI` set),
/// where that fails the test.
pub(crate) fn browser() -> Option<(PathBuf, PathBuf)> {
    let skip = |reason: String| -> Option<(PathBuf, PathBuf)> {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("in CI nothing is skipped: {reason}");
        }
        println!("SKIPPED: {reason}");
        None
    };
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python");
    let python = match std::env::var_os("ROLESYNC_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if venv.exists() => venv,
        _ => PathBuf::from("python3"),
    };
    match std::process::Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return skip(format!(
                "`{} -c \"import playwright.sync_api\"` failed ({}); run .ci/run or pip install \
                 playwright==1.65.2 and set ROLESYNC_TEST_PYTHON",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ));
        }
        Err(e) => return skip(format!("cannot run {}: {e}", python.display())),
    }
    let chromium = match std::env::var_os("ROLESYNC_TEST_CHROMIUM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("chromium"),
    };
    match std::process::Command::new(&chromium)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Some((python, chromium)),
        Ok(out) => skip(format!(
            "`{} --version` failed: {}",
            chromium.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => skip(format!(
            "no chromium ({}: {e}): install Debian's chromium, or set ROLESYNC_TEST_CHROMIUM",
            chromium.display()
        )),
    }
}

#[tokio::test]
async fn in_a_real_browser_the_pages_render_and_their_numbers_are_the_apis() {
    let Some((python, chromium)) = browser() else {
        return;
    };
    let app = spawn_app().await;
    let users = seed_n(&app, "B", 12).await;
    let mut csv = csv_for(&users, "Agent", "Standard Agent");
    csv.push_str("\n\"<script>alert(\"\"x\"\")</script>\",Agent,Platinum");
    csv.push_str("\nB-rejected,Astronaut,Standard Agent");
    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    app.wait_finished(&id).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console_check.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--base", &app.address, "--key", READER_KEY, "--job", &id])
        .arg("--chromium")
        .arg(&chromium)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the browser check ends within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    // The script prints one line per check; it ran them all.
    assert!(stdout.contains("OK: all console checks passed"), "{stdout}");
}
