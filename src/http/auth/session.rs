//! Sealed cookies (AES-256-GCM): the console's session after an OpenID Connect sign-in, and the
//! short-lived state of a sign-in in progress (`state`, `nonce`, PKCE verifier). Any replica
//! with the keys opens them, so no session is stored anywhere. The first key seals, every key
//! opens: a key is rotated by putting the new one first and keeping the old one until the
//! sessions it sealed have ended. What a cookie holds and when it is valid are pure decisions
//! over a time given as an argument.

use crate::domain::{Principal, Scope};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The longest sealed cookie opened (a browser keeps 4 KiB per cookie anyway).
pub const MAX_SEALED: usize = 4096;

pub struct Sealer {
    keys: Vec<LessSafeKey>,
}

impl Sealer {
    pub fn new(keys: &[[u8; 32]]) -> Option<Sealer> {
        let keys = keys
            .iter()
            .map(|k| UnboundKey::new(&AES_256_GCM, k).ok().map(LessSafeKey::new))
            .collect::<Option<Vec<_>>>()?;
        (!keys.is_empty()).then_some(Sealer { keys })
    }

    /// `value` as JSON, sealed with the first key; `purpose` is bound in (a sign-in state
    /// cannot be passed off as a session).
    pub fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> Option<String> {
        let mut data = serde_json::to_vec(value).ok()?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        self.keys
            .first()?
            .seal_in_place_append_tag(nonce, Aad::from(purpose.as_bytes()), &mut data)
            .ok()?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// The value of a cookie sealed by any of the keys for `purpose`.
    pub fn open<T: for<'de> Deserialize<'de>>(&self, purpose: &str, sealed: &str) -> Option<T> {
        if sealed.len() > MAX_SEALED {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        for key in &self.keys {
            let mut data = body.to_vec();
            let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
                return None;
            };
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut data) {
                return serde_json::from_slice(plain).ok();
            }
        }
        None
    }
}

/// A signed-in person: who, what they may do, when they signed in and were last seen (Unix
/// seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub principal: Principal,
    pub scopes: Vec<Scope>,
    pub signed_in: u64,
    pub seen: u64,
    /// The provider's session may be ended too at sign-out (it offers a logout endpoint).
    #[serde(default)]
    pub provider_logout: bool,
}

/// Whether a session still holds at `now`: within its lifetime since sign-in and its idle
/// limit since last seen (a session "from the future" beyond a minute is refused).
pub fn session_holds(s: &Session, now: u64, lifetime_secs: u64, idle_secs: u64) -> bool {
    s.signed_in <= now + 60
        && now.saturating_sub(s.signed_in) < lifetime_secs
        && now.saturating_sub(s.seen) < idle_secs
}

/// Whether to seal the session again with `seen = now` (at most once a minute: the cookie is
/// not rewritten on every page).
pub fn needs_touch(s: &Session, now: u64) -> bool {
    now.saturating_sub(s.seen) >= 60
}

/// A sign-in in progress, kept in the browser between the redirect to the provider and the
/// callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub started: u64,
}

/// A sign-in must come back within this long.
pub const PENDING_SECS: u64 = 600;

/// A random URL-safe token of 32 bytes (state, nonce, PKCE verifier: 43 characters).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE `S256` challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Constant-time equality of two short strings (state, nonce).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(signed_in: u64, seen: u64) -> Session {
        Session {
            principal: Principal::api_key("x"),
            scopes: vec![Scope::JobsRead],
            signed_in,
            seen,
            provider_logout: false,
        }
    }

    #[test]
    fn two_keys_open_during_a_rotation_and_the_first_seals() {
        let old = Sealer::new(&[[1; 32]]).unwrap_or_else(|| panic!("sealer"));
        let both = Sealer::new(&[[2; 32], [1; 32]]).unwrap_or_else(|| panic!("sealer"));
        let new_only = Sealer::new(&[[2; 32]]).unwrap_or_else(|| panic!("sealer"));
        let s = session(100, 100);
        let sealed = old.seal("session", &s).unwrap_or_default();
        assert_eq!(both.open::<Session>("session", &sealed), Some(s.clone()));
        assert_eq!(new_only.open::<Session>("session", &sealed), None);
        assert_eq!(
            both.open::<Session>("pending", &sealed),
            None,
            "bound to its purpose"
        );
        let resealed = both.seal("session", &s).unwrap_or_default();
        assert_eq!(new_only.open::<Session>("session", &resealed), Some(s));
        let mut tampered = URL_SAFE_NO_PAD.decode(&resealed).unwrap_or_default();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        let tampered = URL_SAFE_NO_PAD.encode(tampered);
        assert_eq!(both.open::<Session>("session", &tampered), None);
        assert_eq!(both.open::<Session>("session", "short"), None);
    }

    #[test]
    fn a_session_ends_at_its_lifetime_or_idle_limit() {
        let s = session(1000, 1000);
        assert!(session_holds(&s, 1000, 8 * 3600, 3600));
        assert!(!session_holds(&s, 1000 + 3600, 8 * 3600, 3600), "idle");
        let s = session(1000, 1000 + 8 * 3600 - 10);
        assert!(
            !session_holds(&s, 1000 + 8 * 3600, 8 * 3600, 3600),
            "lifetime"
        );
        assert!(
            !session_holds(&session(5000, 5000), 1000, 100, 100),
            "future"
        );
        assert!(needs_touch(&session(0, 0), 60) && !needs_touch(&session(0, 30), 60));
    }

    #[test]
    fn pkce_is_s256_of_the_verifier() {
        // base64url(SHA-256(verifier)), unpadded, as Python's hashlib and base64 compute it.
        assert_eq!(
            pkce_challenge("rolesync-pkce-test-verifier-0123456789abcdef"),
            "i88e3t5c8fFu382OyYqHzzHT-R3vRaEtifrjsLNL-rU"
        );
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("a", "ab"));
        assert_eq!(random_token().len(), 43);
    }
}
