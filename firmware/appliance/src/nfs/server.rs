//! The NFS listener: accepts clients, checks the allow-list, and keeps the connections in
//! a registry so an idle one costs a socket, not a slot.
//!
//! There is no fixed number of clients to exhaust. Up to [`Limits::max_connections`]
//! connections are kept; when a new client arrives beyond that, the connection idle the
//! longest (no request being received or answered) is closed to make room, and only when
//! every connection is busy is the newcomer refused. Idle connections are also closed after
//! [`Limits::idle_timeout`] (clients reconnect transparently). Memory is bounded by the
//! requests in flight, not by connections: see [`super::conn`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use super::allow::AllowList;
use super::conn;
use super::dispatch::Dispatcher;
use crate::throttle::{Throttle, suppressed_note};

/// Bounds the server enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request record accepted (a 1 MiB WRITE plus its RPC header).
    pub max_record: usize,
    /// Requests being answered at a time, over all connections.
    pub max_inflight: usize,
    /// Requests being answered at a time for one connection.
    pub max_inflight_per_conn: usize,
    /// Connections kept; beyond, the longest idle one is closed for a newcomer.
    pub max_connections: usize,
    /// Bytes of request records being received or answered at a time, over all connections.
    pub receive_budget: usize,
    /// Time a client may take to send the rest of a record it started.
    pub record_timeout: Duration,
    /// A connection with nothing to receive or answer for this long is closed.
    pub idle_timeout: Duration,
    /// Time a client may take to take a reply off the socket.
    pub reply_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record: (1 << 20) + 64 * 1024,
            max_inflight: 32,
            max_inflight_per_conn: 16,
            max_connections: 4096,
            receive_budget: 64 << 20,
            record_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(6 * 60),
            reply_timeout: Duration::from_secs(30),
        }
    }
}

/// How many distinct client addresses are remembered for "new client" log lines.
const SEEN_CLIENTS: usize = 1024;

/// What the registry knows of one connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Milliseconds since the server started at the last complete request or reply.
    last_active: AtomicU64,
    /// Requests being received or answered.
    busy: AtomicUsize,
    /// Asks the connection to close.
    close: Notify,
}

impl ConnState {
    /// Marks activity now.
    pub fn touch(&self, epoch: Instant) {
        self.last_active
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A request is being received or answered.
    pub fn busy(&self) -> BusyGuard<'_> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self)
    }

    /// Resolves when the registry asks this connection to close.
    pub async fn closing(&self) {
        self.close.notified().await
    }
}

/// Ends a [`ConnState::busy`] period when dropped.
pub struct BusyGuard<'a>(&'a ConnState);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The NFS (and MOUNT) server.
pub struct Server {
    pub(super) allow: AllowList,
    pub(super) limits: Limits,
    pub(super) dispatcher: Dispatcher,
    /// Requests being answered, over all connections.
    pub(super) inflight: Arc<Semaphore>,
    /// Receive budget in KiB.
    pub(super) budget: Arc<Semaphore>,
    pub(super) throttle: Throttle,
    pub(super) epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_conn: AtomicU64,
    seen: Mutex<HashSet<IpAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// A server admitting `allow`, answering with `dispatcher`.
    pub fn new(allow: AllowList, limits: Limits, dispatcher: Dispatcher) -> Arc<Server> {
        Arc::new(Server {
            inflight: Arc::new(Semaphore::new(limits.max_inflight)),
            budget: Arc::new(Semaphore::new(limits.receive_budget.div_ceil(1024))),
            allow,
            limits,
            dispatcher,
            throttle: Throttle::new(Duration::from_secs(10)),
            epoch: Instant::now(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Accepts clients on `listener` until the task is dropped.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: make room and keep serving.
                    if let Some(n) = self.throttle.admit("accept") {
                        tracing::error!(
                            "accepting an NFS connection failed: {e}{}",
                            suppressed_note(n)
                        );
                    }
                    self.close_most_idle();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !self.allow.permits(peer.ip()) {
                self.refuse(sock, peer, "not in the allow-list");
                continue;
            }
            if self.connections() >= self.limits.max_connections && !self.close_most_idle() {
                self.refuse(sock, peer, "every connection is busy");
                continue;
            }
            let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let state = Arc::new(ConnState::default());
            state.touch(self.epoch);
            lock(&self.conns).insert(id, state.clone());
            self.note_client(peer);
            let server = self.clone();
            tokio::spawn(async move {
                conn::serve(&server, sock, peer, &state).await;
                lock(&server.conns).remove(&id);
            });
        }
    }

    /// Asks the connection idle the longest to close; false if every one is busy.
    fn close_most_idle(&self) -> bool {
        let conns = lock(&self.conns);
        let idlest = conns
            .values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        match idlest {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn refuse(&self, sock: TcpStream, peer: SocketAddr, why: &str) {
        // Linger 0: the client gets a reset, not a connection that later goes quiet.
        #[allow(deprecated)]
        let _ = sock.set_linger(Some(Duration::ZERO));
        drop(sock);
        if let Some(n) = self.throttle.admit("refused") {
            tracing::warn!(
                "refused NFS connection from {peer}: {why}{}",
                suppressed_note(n)
            );
        }
    }

    fn note_client(&self, peer: SocketAddr) {
        let mut seen = lock(&self.seen);
        if seen.contains(&peer.ip()) {
            tracing::debug!("NFS connection from {peer}");
            return;
        }
        if seen.len() >= SEEN_CLIENTS {
            seen.clear();
        }
        seen.insert(peer.ip());
        tracing::info!("NFS client {} connected", peer.ip());
    }
}
