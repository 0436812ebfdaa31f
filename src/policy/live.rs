//! The policy in force, swappable at run time (SIGHUP or a file change). A job keeps the
//! `Arc<Policy>` it was planned with; a reload only affects jobs planned after it.

use super::Policy;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
    path: Option<PathBuf>,
    /// Why the last reload was refused; cleared by a successful one.
    last_error: RwLock<Option<String>>,
    /// What importing the target's role catalog reported (roles missing in the target, …).
    import_notes: RwLock<Option<Vec<String>>>,
    /// Digest of the file's content when last looked at: the content, not the modification
    /// time, since a coarse file-system clock can give an edit its predecessor's mtime.
    seen: std::sync::Mutex<Option<Vec<u8>>>,
}

fn digest(path: &std::path::Path) -> Option<Vec<u8>> {
    use sha2::Digest;
    std::fs::read(path)
        .ok()
        .map(|b| sha2::Sha256::digest(&b).to_vec())
}

impl LivePolicy {
    pub(crate) fn new(policy: Policy, path: Option<PathBuf>) -> LivePolicy {
        let seen = std::sync::Mutex::new(path.as_deref().and_then(digest));
        LivePolicy {
            seen,
            current: RwLock::new(Arc::new(policy)),
            path,
            last_error: RwLock::new(None),
            import_notes: RwLock::new(None),
        }
    }

    pub(crate) fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        match self.last_error.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// True once each time the file's content differs from when it was last looked at.
    pub(crate) fn file_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let now = digest(path);
        match self.seen.lock() {
            Ok(mut seen) if *seen != now => {
                *seen = now;
                true
            }
            _ => false,
        }
    }

    /// Loads the file again; an invalid policy is refused and the old one stays in force.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let result = Policy::load(path).map_err(|e| e.to_string());
        match &result {
            Ok(_) => {}
            Err(e) => {
                if let Ok(mut slot) = self.last_error.write() {
                    *slot = Some(e.clone());
                }
            }
        }
        let policy = result?;
        if let Ok(mut slot) = self.current.write() {
            *slot = Arc::new(policy);
        }
        if let Ok(mut slot) = self.last_error.write() {
            *slot = None;
        }
        Ok(())
    }

    pub(crate) fn import_notes(&self) -> Option<Vec<String>> {
        self.import_notes.read().ok().and_then(|n| n.clone())
    }

    /// Puts in force a policy merged with the target's role catalog, with the import's notes.
    pub(crate) fn replace_imported(&self, policy: Policy, notes: Vec<String>) {
        if let Ok(mut slot) = self.import_notes.write() {
            *slot = Some(notes);
        }
        self.replace(policy);
    }

    /// Replaces the policy in force.
    pub(crate) fn replace(&self, policy: Policy) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Arc::new(policy);
        }
    }
}
