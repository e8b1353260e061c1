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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs::Export;
    use crate::nfs::framing::{LAST_FRAGMENT, split_header};
    use crate::nfs::program::NFS_PROGRAM;
    use crate::testutil::{Fixture, call_record};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(allow: &[&str], limits: Limits) -> (SocketAddr, Arc<Server>, Fixture) {
        let fx = Fixture::new(64 << 20);
        let d = Dispatcher::new(Export::new(fx.unlocked()));
        let server = Server::new(AllowList::parse(allow).unwrap(), limits, d);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(server.clone().run(l));
        (addr, server, fx)
    }

    fn null(xid: u32) -> Vec<u8> {
        call_record(xid, NFS_PROGRAM, 0, &[])
    }

    /// The xid of the next reply, or None if the connection closed or nothing came in 5 s.
    async fn reply_xid(s: &mut TcpStream) -> Option<u32> {
        let read = async {
            let mut h = [0u8; 4];
            s.read_exact(&mut h).await.ok()?;
            let (_, len) = split_header(u32::from_be_bytes(h));
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.ok()?;
            Some(u32::from_be_bytes(body[..4].try_into().unwrap()))
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    }

    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_outside_the_allow_list_are_reset_at_connect() {
        let (addr, _, _fx) = start(&["10.0.0.0/8"], Limits::default()).await;
        match TcpStream::connect(addr).await {
            Ok(mut s) => {
                let _ = s.write_all(&null(1)).await;
                assert!(closed(&mut s).await);
            }
            // The reset may already reach the connect.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_and_an_oversized_record_closes_the_connection() {
        let (addr, _, _fx) = start(&[], Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&null(7)).await.unwrap();
        assert_eq!(reply_xid(&mut s).await, Some(7));
        // A header announcing 2 GiB: closed without reading it.
        s.write_all(&(LAST_FRAGMENT | 0x7fff_ffff).to_be_bytes())
            .await
            .unwrap();
        assert!(closed(&mut s).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retransmission_of_a_request_being_answered_is_dropped() {
        let (addr, _, _fx) = start(&[], Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut burst = null(5);
        burst.extend(null(5));
        burst.extend(null(6));
        s.write_all(&burst).await.unwrap();
        let mut got = vec![reply_xid(&mut s).await, reply_xid(&mut s).await];
        got.sort();
        // Whether the second 5 was dropped depends on timing; no more than one extra.
        if got != [Some(5), Some(6)] {
            assert_eq!(got, [Some(5), Some(5)]);
            assert_eq!(reply_xid(&mut s).await, Some(6));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_senders_hold_no_slot_and_time_out() {
        let limits = Limits {
            max_inflight: 1,
            record_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let (addr, _, _fx) = start(&[], limits).await;
        // Starts a 1000-byte record, sends 10 bytes of it, and stalls.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(&(LAST_FRAGMENT | 1000).to_be_bytes())
            .await
            .unwrap();
        slow.write_all(&[1u8; 10]).await.unwrap();
        // Two bytes of a record mark and nothing more.
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(&[0x80, 0]).await.unwrap();
        let mut quick = TcpStream::connect(addr).await.unwrap();
        quick.write_all(&null(42)).await.unwrap();
        assert_eq!(reply_xid(&mut quick).await, Some(42), "not held up");
        assert!(closed(&mut slow).await, "the stalled record times out");
        assert!(closed(&mut half).await, "so does the stalled record mark");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newcomer_closes_the_longest_idle_connection() {
        let limits = Limits {
            max_connections: 3,
            ..Limits::default()
        };
        let (addr, server, _fx) = start(&[], limits).await;
        let mut idle = Vec::new();
        for i in 0..3u32 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&null(i)).await.unwrap();
            assert_eq!(reply_xid(&mut s).await, Some(i));
            idle.push(s);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        fresh.write_all(&null(99)).await.unwrap();
        assert_eq!(reply_xid(&mut fresh).await, Some(99));
        assert!(closed(&mut idle[0]).await, "the idlest made room");
        idle[2].write_all(&null(3)).await.unwrap();
        assert_eq!(reply_xid(&mut idle[2]).await, Some(3), "the others stay");
        assert!(server.connections() <= 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _, _fx) = start(&[], limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&null(1)).await.unwrap();
        assert_eq!(reply_xid(&mut s).await, Some(1));
        assert!(closed(&mut s).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_in_flight_per_connection_are_bounded() {
        let limits = Limits {
            max_inflight_per_conn: 2,
            ..Limits::default()
        };
        let (addr, _, _fx) = start(&[], limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut burst = Vec::new();
        for xid in 1..=50 {
            burst.extend(null(xid));
        }
        s.write_all(&burst).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..50 {
            got.push(reply_xid(&mut s).await.unwrap());
        }
        got.sort();
        assert_eq!(
            got,
            (1..=50).collect::<Vec<_>>(),
            "every request answered once"
        );
    }
}
