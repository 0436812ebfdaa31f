//! The console's sign-in through a real OpenID provider (`idp`): in chromium through the
//! provider's own login page (`tests/browser/oidc_check.py`); a callback that is not this
//! browser's sign-in refused; the session cookie sealed with either of two keys during a
//! rotation, and ended by its idle limit.

use crate::helpers::*;
use crate::idp::{Idp, now};
use rolesync::domain::{Principal, PrincipalKind, Scope};
use rolesync::http::auth::session::{Sealer, Session};
use std::path::PathBuf;

const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 × 0x01
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 × 0x02

/// A rolesync on a port chosen first (the provider must know its callback), its console
/// signing in with `idp`, sealing sessions with `keys`.
async fn console_app(idp: Option<&Idp>, port: u16, keys: &[&str], idle_secs: u64) -> TestApp {
    let issuer = idp
        .map(|i| i.issuer.clone())
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    spawn_app_with(TestOptions {
        config: format!(
            r#"
[server]
bind = "127.0.0.1:{port}"
[auth.console.oidc]
issuer = "{issuer}"
client_id = "rolesync-console"
client_secret = "rolesync-console-secret"
redirect_url = "http://127.0.0.1:{port}/ui/oidc/callback"
post_logout_redirect_url = "http://127.0.0.1:{port}/ui/login"
scopes = ["openid", "profile", "groups"]
session_keys = [{keys}]
session_idle_secs = {idle_secs}
[[auth.console.oidc.grants]]
claim = "groups"
value = "rolesync-readers"
scopes = ["jobs:read"]
[[auth.console.oidc.grants]]
claim = "groups"
value = "rolesync-admins"
scopes = ["admin"]
"#,
            keys = keys.join(", ")
        ),
        ..TestOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_person_signs_in_through_the_providers_login_page_in_a_real_browser() {
    if !crate::idp::available("a_person_signs_in_through_the_providers_login_page…") {
        return;
    }
    let Some((python, chromium)) = crate::console::browser() else {
        return;
    };
    let port = crate::process::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(
        &[format!("{base}/ui/oidc/callback")],
        &[format!("{base}/ui/login")],
    )
    .await;
    let app = console_app(Some(&idp), port, &[KEY_A], 3600).await;
    app.seed(&[("O1", &[])]).await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nO1,Agent,Standard Agent\n")
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    app.wait_finished(&id).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/oidc_check.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--base", &app.address, "--job", &id])
        .arg("--chromium")
        .arg(&chromium)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), out)
        .await
        .expect("the browser check ends within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}\nprovider log:\n{}",
        idp.log()
    );
    assert!(
        stdout.contains("OK: all OpenID sign-in checks passed"),
        "{stdout}"
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_callback_that_is_not_this_browsers_sign_in_is_refused() {
    if !crate::idp::available("a_callback_that_is_not_this_browsers_sign_in…") {
        return;
    }
    let port = crate::process::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&[format!("{base}/ui/oidc/callback")], &[]).await;
    let app = console_app(Some(&idp), port, &[KEY_A], 3600).await;
    // The start sends the browser to the provider with state, nonce and an S256 challenge.
    let start = client()
        .get(format!("{base}/ui/oidc/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303);
    let to = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&format!("{}/auth?", idp.issuer)), "{to}");
    for p in [
        "state=",
        "nonce=",
        "code_challenge=",
        "code_challenge_method=S256",
        "client_id=rolesync-console",
    ] {
        assert!(to.contains(p), "{p} in {to}");
    }
    let set = start.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("rolesync_oidc=")
            && set.contains("HttpOnly")
            && set.contains("Path=/ui/oidc")
    );
    // A callback without this browser's sign-in cookie (a forged or replayed one): refused.
    let forged = client()
        .get(format!("{base}/ui/oidc/callback?code=abc&state=xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert!(
        forged
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("rolesync_session="))
    );
    // With the cookie but another state: refused too.
    let cookie = set.split(';').next().unwrap();
    let wrong = client()
        .get(format!(
            "{base}/ui/oidc/callback?code=abc&state=not-the-one"
        ))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rolesync_auth_failures_total{reason=\"session\"} 2"),
        "{metrics}"
    );
}

fn sealed(key: &str, signed_in: u64, seen: u64) -> String {
    let key = rolesync::configuration::session_key(key).unwrap();
    let sealer = Sealer::new(&[key]).unwrap();
    let session = Session {
        principal: Principal::token(PrincipalKind::Session, "http://idp", "ops", "Ops Person"),
        scopes: vec![Scope::JobsRead],
        signed_in,
        seen,
        provider_logout: false,
    };
    format!(
        "rolesync_session={}",
        sealer.seal("session", &session).unwrap()
    )
}

async fn page_status(base: &str, cookie: &str) -> u16 {
    client()
        .get(format!("{base}/ui/jobs"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sessions_sealed_with_either_key_open_during_a_rotation_and_end_when_idle() {
    let port = crate::process::free_port();
    // No provider needed: sessions are opened, not made, here.
    let app = console_app(None, port, &[KEY_B, KEY_A], 600).await;
    let t = now();
    assert_eq!(
        page_status(&app.address, &sealed(KEY_A, t, t)).await,
        200,
        "the old key opens"
    );
    assert_eq!(
        page_status(&app.address, &sealed(KEY_B, t, t)).await,
        200,
        "the new key opens"
    );
    let page = client()
        .get(format!("{}/ui/jobs", app.address))
        .header("cookie", sealed(KEY_B, t, t))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Ops Person"), "{page}");
    // Idle beyond 600 s, or past the 8 h lifetime: signed out.
    assert_eq!(
        page_status(&app.address, &sealed(KEY_B, t - 700, t - 700)).await,
        303
    );
    assert_eq!(
        page_status(&app.address, &sealed(KEY_B, t - 9 * 3600, t - 10)).await,
        303
    );
    // A key no longer configured opens nothing; nor does a tampered cookie.
    let c = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
    assert_eq!(page_status(&app.address, &sealed(c, t, t)).await, 303);
    let mut tampered: Vec<char> = sealed(KEY_B, t, t).chars().collect();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_eq!(page_status(&app.address, &tampered).await, 303);
    // A session seen more than a minute ago is sealed again with the new key, `seen` now.
    let resp = client()
        .get(format!("{}/ui/jobs", app.address))
        .header("cookie", sealed(KEY_A, t - 120, t - 120))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("SameSite=Lax") && set.contains("Path=/ui") && set.contains("Secure"));
    let resealed = set.split(';').next().unwrap().to_owned();
    let b = Sealer::new(&[rolesync::configuration::session_key(KEY_B).unwrap()]).unwrap();
    let s: Session = b
        .open("session", resealed.trim_start_matches("rolesync_session="))
        .expect("resealed with the first key");
    assert!(s.seen >= t && s.signed_in == t - 120);
}
