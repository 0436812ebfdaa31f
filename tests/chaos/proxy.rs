//! A TCP proxy in front of PostgreSQL that the test can cut.
//!
//! Invariants:
//! - `cut(dur, false)` closes every connection open through the proxy at once (both sides
//!   dropped, so the replicas see their PostgreSQL connections reset) and, for `dur`, accepts
//!   new connections only to drop them: the store is unreachable from every replica at once,
//!   as in a database failover. `cut(dur, true)` is a black hole (a partition that drops
//!   packets): connections old and new are held open and silent for `dur`, then closed, so
//!   queries in flight hang until the cut ends.
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
    /// The current cut is a black hole: connections go silent (held open, nothing forwarded)
    /// until it ends, then close, as in a partition where packets are dropped, not refused.
    /// A query in flight then hangs until the cut ends instead of failing at once.
    blackhole: std::sync::atomic::AtomicBool,
    /// Bumped on every cut: each connection's copy loop ends when it changes.
    epoch: watch::Sender<u64>,
}

impl State {
    fn is_cut(&self) -> bool {
        let until = self.cut_until.lock().expect("proxy lock");
        until.is_some_and(|u| Instant::now() < u)
    }

    /// In a black-hole cut, waits until it ends (the caller holds its sockets meanwhile).
    async fn hold_while_blackholed(&self) {
        use std::sync::atomic::Ordering;
        while self.blackhole.load(Ordering::Relaxed) && self.is_cut() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
            blackhole: std::sync::atomic::AtomicBool::new(false),
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
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.hold_while_blackholed().await;
                        drop(client);
                    });
                    continue;
                }
                let upstream = upstream.clone();
                let st = st.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = epoch.changed() => s.hold_while_blackholed().await,
                        _ = st.cancelled() => {}
                    }
                    // Both sockets are dropped here: the connection is gone on both sides.
                });
            }
        });
        Proxy { addr, state, stop }
    }

    /// Closes every open connection now and refuses new ones for `dur`; with `blackhole`,
    /// connections old and new are held silent for `dur` instead, then closed.
    pub fn cut(&self, dur: Duration, blackhole: bool) {
        self.state
            .blackhole
            .store(blackhole, std::sync::atomic::Ordering::Relaxed);
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
