//! API keys with scopes: `auth.keys` in the config, plus `auth.keys_file`, re-read when it
//! changes and on SIGHUP (`KeyRing::reload`). Keys are configured by their SHA-256 only; the
//! presented key is hashed and compared with every key in constant time. Several keys may share
//! a name (a key and its successor during a rotation): each works, and is known by that name.

use crate::configuration::{ApiKeySettings, AuthSettings, read_keys_file};
use crate::domain::Scope;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// A configured key, ready to check.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    digest: [u8; 32],
    pub scopes: Vec<Scope>,
}

impl ApiKey {
    pub fn from_settings(s: &ApiKeySettings) -> Option<ApiKey> {
        let bytes = hex::decode(&s.key_sha256).ok()?;
        let digest: [u8; 32] = bytes.try_into().ok()?;
        Some(ApiKey {
            name: s.name.clone(),
            digest,
            scopes: s.scopes.clone(),
        })
    }
}

/// The hex SHA-256 to put in `auth.keys.key_sha256` for a key.
pub fn key_digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The key a presented secret is, if it is one of `keys`.
pub fn find<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found: Option<&ApiKey> = None;
    for key in keys {
        // Compare every key fully, whatever matched, so timing says nothing.
        if constant_time_eq(&key.digest, &digest) {
            found = Some(key);
        }
    }
    found
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The keys in force: the config's, then the file's. Swapped whole on a reload, so a request
/// sees one set or the other.
pub struct KeyRing {
    config: Vec<ApiKey>,
    file: Option<PathBuf>,
    /// The file's modification time when it was last read.
    file_mtime: RwLock<Option<SystemTime>>,
    current: RwLock<Arc<Vec<ApiKey>>>,
}

impl KeyRing {
    /// From `[auth]`; the key file was read once by the settings' checks, and is read again
    /// here (a file that fails now is an error at start).
    pub fn new(auth: &AuthSettings) -> Result<KeyRing, String> {
        let ring = KeyRing {
            config: auth.keys.iter().filter_map(ApiKey::from_settings).collect(),
            file: auth.keys_file.clone(),
            file_mtime: RwLock::new(None),
            current: RwLock::new(Arc::new(Vec::new())),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// Keys only, no file (tests, `rolesync validate`).
    pub fn of(keys: Vec<ApiKey>) -> KeyRing {
        KeyRing {
            config: keys.clone(),
            file: None,
            file_mtime: RwLock::new(None),
            current: RwLock::new(Arc::new(keys)),
        }
    }

    pub fn current(&self) -> Arc<Vec<ApiKey>> {
        self.current
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Whether the key file's modification time changed since it was read.
    pub fn file_changed(&self) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let seen = *self.file_mtime.read().unwrap_or_else(|e| e.into_inner());
        now != seen
    }

    /// Reads the key file again; on a problem the keys in force stay and the problem is
    /// returned (it names the file, never a key). Returns the number of keys now in force.
    pub fn reload(&self) -> Result<usize, String> {
        let mut keys = self.config.clone();
        if let Some(path) = &self.file {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            // Whatever happens next, this version of the file has been seen.
            *self.file_mtime.write().unwrap_or_else(|e| e.into_inner()) = mtime;
            let from_file = read_keys_file(path)?;
            keys.extend(from_file.iter().filter_map(ApiKey::from_settings));
        }
        let n = keys.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> ApiKey {
        ApiKey::from_settings(&ApiKeySettings {
            name: name.into(),
            key_sha256: key_digest_hex(secret),
            scopes: vec![Scope::JobsRead],
        })
        .unwrap_or_else(|| panic!("a valid key"))
    }

    #[test]
    fn two_keys_of_one_name_both_work() {
        let keys = vec![key("hr", "old"), key("hr", "new"), key("ops", "x")];
        assert_eq!(find(&keys, "old").map(|k| k.name.as_str()), Some("hr"));
        assert_eq!(find(&keys, "new").map(|k| k.name.as_str()), Some("hr"));
        assert!(find(&keys, "nope").is_none());
    }

    #[test]
    fn a_bad_key_file_keeps_the_keys_in_force() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        write(&format!(
            "[[keys]]\nname = \"hr\"\nkey_sha256 = \"{}\"\nscopes = [\"jobs:read\"]\n",
            key_digest_hex("one")
        ));
        let auth = AuthSettings {
            keys_file: Some(path.clone()),
            ..AuthSettings::default()
        };
        let ring = KeyRing::new(&auth).unwrap_or_else(|e| panic!("{e}"));
        assert!(find(&ring.current(), "one").is_some());
        write("[[keys]]\nname = \"hr\"\nkey_sha256 = \"zz\"\nscopes = []\n");
        let err = ring.reload().err().unwrap_or_default();
        assert!(err.contains("not a hex SHA-256"), "{err}");
        assert!(find(&ring.current(), "one").is_some(), "still in force");
    }
}
