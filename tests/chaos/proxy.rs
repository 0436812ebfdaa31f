//! A TCP proxy in front of PostgreSQL that the test can cut.
//!
//! Invariants:
//! - `cut(dur)` closes every connection open through the proxy at once (both sides dropped,
//!   so the replicas see their PostgreSQL connections reset) and, for `dur`, accepts new
//!   connections only to drop them: the store is unreachable from every replica at once, as
//!   in a network partition or a database failover.
//! - While not cut the proxy is transparent: bytes are copied both ways unchanged.
//! - The test's own connections (create and drop of the database, never during the run) do
//!   not go through the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

struct State {
    /// Refuse (accept then drop) new connections until this instant.
    cut_until: Mutex<Option<Instant>>,
    /// Bumped on every cut: each connection's copy loop ends when it changes.
    epoch: watch::Sender<u64>,
}

impl State {
    fn is_cut(&self) -> bool {
        let until = self.cut_until.lock().expect("proxy lock");
        until.is_some_and(|u| Instant::now() < u)
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the store proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (epoch, _) = watch::channel(0u64);
        let state = Arc::new(State {
            cut_until: Mutex::new(None),
            epoch,
        });
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                // Subscribed before the check: a cut right after it still ends this one.
                let mut epoch = s.epoch.subscribe();
                if s.is_cut() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = epoch.changed() => {}
                        _ = st.cancelled() => {}
                    }
                    // Both sockets are dropped here: the connection is gone on both sides.
                });
            }
        });
        Proxy { addr, state, stop }
    }

    /// Closes every open connection now and refuses new ones for `dur`.
    pub fn cut(&self, dur: Duration) {
        *self.state.cut_until.lock().expect("proxy lock") = Some(Instant::now() + dur);
        self.state.epoch.send_modify(|e| *e += 1);
    }

    /// Ends a cut early (the drain).
    pub fn heal(&self) {
        *self.state.cut_until.lock().expect("proxy lock") = None;
    }

    pub fn is_cut(&self) -> bool {
        self.state.is_cut()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
