//! The console's sign-in cookie and its CSRF guard, as pure functions (no I/O).
//!
//! The cookie holds the API key itself, base64url-encoded, and every page checks it exactly as
//! the API checks an `Authorization` header (`auth::authenticate`: hashed, compared in constant
//! time). So nothing about a sign-in lives in the server: any replica serves any page, a key
//! removed from `auth.keys` stops working at once, and the server never stores the key (it holds
//! it only while hashing, as for `/v1`). The browser keeps it `HttpOnly` (no script reads it),
//! `Secure` (only sent over https, or to localhost), `SameSite=Strict` (never sent on a request
//! another site starts) and `Path=/ui` (not sent to `/v1`, nor anywhere else), for
//! `SESSION_SECS` at most.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const NAME: &str = "rolesync_console";
/// How long a sign-in lasts in the browser.
pub const SESSION_SECS: u64 = 8 * 3600;
/// The longest key the sign-in form takes (a key longer than this is not one of ours).
pub const MAX_KEY_BYTES: usize = 1024;

/// `Set-Cookie` for a signed-in browser.
pub fn sign_in(key: &str) -> String {
    format!(
        "{NAME}={}; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age={SESSION_SECS}",
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    )
}

/// `Set-Cookie` that makes the browser forget the sign-in.
pub fn sign_out() -> String {
    format!("{NAME}=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0")
}

/// The key the request's cookie carries, if it carries one that decodes.
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie_value(v, NAME))
        .filter(|v| v.len() <= MAX_KEY_BYTES * 4 / 3 + 4)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The value of the cookie `name` in a `Cookie` header value.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

/// Whether a form post may come from another site. Browsers send `Sec-Fetch-Site` (which a page
/// cannot set) on every form post, older ones `Origin`: the first that is there decides, and
/// `Origin` must name this host (`Host`, or `X-Forwarded-Host` behind a proxy that rewrites it).
/// A client that sends neither is not a browser, so it carries no one else's cookie and forges
/// nothing. (Posts carry the cookie only from this site anyway, `SameSite=Strict`; this also
/// stops another site from signing a browser in under the attacker's key.)
pub fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    // `Origin: null` (sandboxed or opaque) and anything unreadable are refused.
    let Some(origin_host) = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest)
    else {
        return true;
    };
    ![text("host"), text("x-forwarded-host")]
        .into_iter()
        .flatten()
        .any(|h| h.eq_ignore_ascii_case(origin_host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.append(*k, v);
            }
        }
        h
    }

    #[test]
    fn the_cookie_carries_the_key_back() {
        let set = sign_in("k; with=odd \"chars\"");
        let value = set.split(';').next().unwrap_or_default();
        let h = headers(&[("cookie", &format!("other=1; {value}; x=2"))]);
        assert_eq!(presented_key(&h).as_deref(), Some("k; with=odd \"chars\""));
        assert!(set.contains("HttpOnly") && set.contains("Secure"));
        assert!(set.contains("SameSite=Strict") && set.contains("Path=/ui"));
        assert_eq!(
            presented_key(&headers(&[("cookie", "rolesync_console=%%%")])),
            None
        );
        assert_eq!(
            presented_key(&headers(&[("cookie", "rolesync_consolex=YQ")])),
            None
        );
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value("a=1; rs=xyz; b=2", "rs"), Some("xyz"));
        assert_eq!(cookie_value("rsx=1", "rs"), None);
        assert_eq!(cookie_value("rs=", "rs"), None);
    }

    #[test]
    fn posts_from_another_site_are_refused() {
        let host = ("host", "127.0.0.1:8080");
        assert!(!cross_site(&headers(&[host])), "not a browser");
        assert!(!cross_site(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!cross_site(&headers(&[
            host,
            ("origin", "https://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(cross_site(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(cross_site(&headers(&[host, ("origin", "null")])));
        assert!(cross_site(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(cross_site(&headers(&[
            host,
            ("sec-fetch-site", "same-site")
        ])));
        assert!(
            cross_site(&headers(&[("origin", "http://127.0.0.1:8080")])),
            "no host"
        );
        assert!(!cross_site(&headers(&[
            ("host", "rolesync:8080"),
            ("x-forwarded-host", "ops.example"),
            ("origin", "https://ops.example")
        ])));
    }
}
