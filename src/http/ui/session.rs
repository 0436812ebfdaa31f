//! Console sign-ins: a random session id in the cookie, mapped here to the key's caller (its
//! name and scopes) — the key itself is never stored, echoed or logged. Bounded in number
//! (the oldest sign-in goes first when full) and in time (a fixed lifetime from sign-in).
//! In memory: a restart signs everyone out, which is the safe direction.

use crate::http::auth::Caller;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sessions kept at most; the oldest is dropped to make room.
pub const MAX_SESSIONS: usize = 1000;
/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

pub struct Sessions {
    max: usize,
    ttl: Duration,
    map: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Sessions {
    pub fn new(max: usize, ttl: Duration) -> Sessions {
        Sessions {
            max: max.max(1),
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Signs `caller` in; the id to put in the cookie (256 random bits, hex).
    pub fn open(&self, caller: Caller) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        while map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(id.clone(), (caller, now + self.ttl));
        id
    }

    /// The caller signed in under `id`, unless it expired or was signed out.
    pub fn get(&self, id: &str) -> Option<Caller> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some((caller, expires)) if *expires > Instant::now() => Some(caller.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The session id in a `Cookie` header value, if there is one named `name`.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::{ApiKey, authenticate, key_digest_hex};

    fn caller(name: &str) -> Caller {
        let settings = crate::configuration::ApiKeySettings {
            name: name.into(),
            key_sha256: key_digest_hex(name),
            scopes: vec![crate::domain::Scope::JobsRead],
        };
        let keys: Vec<ApiKey> = ApiKey::from_settings(&settings).into_iter().collect();
        authenticate(&keys, name).expect("the key matches itself")
    }

    #[test]
    fn bounded_expiring_and_closable() {
        let s = Sessions::new(2, Duration::from_secs(60));
        let a = s.open(caller("a"));
        let b = s.open(caller("b"));
        assert_eq!(s.get(&a).map(|c| c.key_name), Some("a".into()));
        let c = s.open(caller("c"));
        assert!(s.get(&a).is_none(), "the oldest made room");
        assert!(s.get(&b).is_some() && s.get(&c).is_some());
        s.close(&b);
        assert!(s.get(&b).is_none());
        let short = Sessions::new(2, Duration::ZERO);
        let d = short.open(caller("d"));
        assert!(short.get(&d).is_none(), "expired");
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value("a=1; rs=xyz; b=2", "rs"), Some("xyz"));
        assert_eq!(cookie_value("rsx=1", "rs"), None);
        assert_eq!(cookie_value("rs=", "rs"), None);
    }
}
