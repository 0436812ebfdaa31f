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
}

impl LivePolicy {
    pub fn new(policy: Policy, path: Option<PathBuf>) -> LivePolicy {
        LivePolicy {
            current: RwLock::new(Arc::new(policy)),
            path,
            last_error: RwLock::new(None),
        }
    }

    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    pub fn last_error(&self) -> Option<String> {
        match self.last_error.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the file again; an invalid policy is refused and the old one stays in force.
    pub fn reload(&self) -> Result<(), String> {
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

    /// Replaces the policy in force (e.g. after importing the target's role catalog).
    pub fn replace(&self, policy: Policy) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Arc::new(policy);
        }
    }
}
