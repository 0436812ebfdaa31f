//! The webhook receiver: an axum server on 127.0.0.1:0 that answers 200 to every delivery
//! and keeps each event once, by id (delivery is at least once: retries and redeliveries keep
//! the `webhook-id`, docs/webhooks.md). Batches (`"type": "batch"`) are opened into their
//! events, each keyed by its own `id`. Signatures are not checked here: tests/api/webhooks.rs
//! does that against the reference library; this test only needs to know what arrived.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One event: its type and its `data`.
#[derive(Clone, Debug)]
pub struct Event {
    pub event_type: String,
    pub data: Value,
}

#[derive(Clone, Default)]
struct Shared {
    events: Arc<Mutex<BTreeMap<String, Event>>>,
    deliveries: Arc<AtomicU64>,
}

pub struct Receiver {
    pub url: String,
    shared: Shared,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn hook(State(s): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    s.deliveries.fetch_add(1, Ordering::Relaxed);
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::OK;
    };
    let id = headers
        .get("webhook-id")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut events = s.events.lock().expect("receiver lock");
    let mut keep = |id: String, e: &Value| {
        let event_type = e["type"].as_str().unwrap_or("").to_owned();
        events.entry(id).or_insert(Event {
            event_type,
            data: e["data"].clone(),
        });
    };
    if v["type"] == "batch" {
        for e in v["events"].as_array().into_iter().flatten() {
            keep(e["id"].as_str().unwrap_or("").to_owned(), e);
        }
    } else {
        keep(id, &v);
    }
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Shared::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let stop = CancellationToken::new();
        let signal = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            shared,
            stop,
        }
    }

    /// Every distinct event so far, by id.
    pub fn events(&self) -> BTreeMap<String, Event> {
        self.shared.events.lock().expect("receiver lock").clone()
    }

    pub fn deliveries(&self) -> u64 {
        self.shared.deliveries.load(Ordering::Relaxed)
    }
}
