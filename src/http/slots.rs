//! Upload slots: how many `POST /v1/jobs` may be in progress at once, per API key and in all.
//! A slot is held from before the body is read until the answer, so one key (leaked, or an
//! integration stuck in a retry loop) cannot take every upload, and the process never spools
//! more bodies at once than the total allows.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a refused client is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

pub struct IngestSlots {
    total: Arc<Semaphore>,
    per_key_max: usize,
    /// One semaphore per API key name; the key names are configured, so the map is bounded.
    per_key: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Both permits; the slot is free again when this is dropped.
pub struct IngestSlot {
    _key: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl IngestSlots {
    pub fn new(total: usize, per_key: usize) -> IngestSlots {
        IngestSlots {
            total: Arc::new(Semaphore::new(total)),
            per_key_max: per_key,
            per_key: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `key`, or at once: 429 when the key has its share in progress, 503 when the
    /// whole process has.
    pub fn take(&self, key: &str) -> Result<IngestSlot, ApiError> {
        let sem = {
            let mut m = self.per_key.lock().unwrap_or_else(PoisonError::into_inner);
            m.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key_max)))
                .clone()
        };
        let key_permit = sem.try_acquire_owned().map_err(|_| ApiError::TooManyRequests {
            detail: format!(
                "this API key has {} uploads in progress (server.max_ingests_per_key); try again shortly",
                self.per_key_max
            ),
            retry_after_secs: RETRY_AFTER_SECS,
        })?;
        let total_permit =
            self.total
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiError::Unavailable {
                    detail: "too many uploads in progress (server.max_ingests); try again shortly"
                        .into(),
                    retry_after_secs: RETRY_AFTER_SECS,
                })?;
        Ok(IngestSlot {
            _key: key_permit,
            _total: total_permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_share_and_the_process_its_total() {
        let slots = IngestSlots::new(3, 2);
        let a1 = slots.take("a");
        let a2 = slots.take("a");
        assert!(a1.is_ok() && a2.is_ok());
        let a3 = slots.take("a").err().map(|e| e.status().as_u16());
        assert_eq!(a3, Some(429));
        let b1 = slots.take("b");
        assert!(b1.is_ok());
        let b2 = slots.take("b").err().map(|e| e.status().as_u16());
        assert_eq!(b2, Some(503), "the total (3) is reached");
        drop(a1);
        assert!(slots.take("b").is_ok(), "a slot freed is taken again");
    }
}
