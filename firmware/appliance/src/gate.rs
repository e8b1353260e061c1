//! The NFS front door: the only socket clients reach.
//!
//! `nfsserve` 0.11 accepts connections itself and offers no per-connection hook (its
//! per-socket handler and RPC context are private), trusts each fragment header up to
//! 2 GiB, and spawns one task per request with no limit. So the appliance runs `nfsserve`
//! on a private loopback port and puts this gate in front of it. For each client the gate:
//! - checks the allow-list at accept and resets refused connections at once (RST);
//! - reads every request record with a size limit before allocating it, and closes the
//!   connection of a client that announces a larger one (memory grows with the bytes a
//!   client really sends, at most one record per connection);
//! - admits a bounded number of requests into `nfsserve` at a time, globally and per
//!   connection, and stops reading from clients while the bound is reached (backpressure:
//!   TCP flow control then slows the client down). Requests of one connection still run
//!   concurrently inside `nfsserve`, which is what lets the store group their fsyncs.
//!
//! The gate answers WRITE and COMMIT ([`crate::writeback`]), READDIR ([`crate::readdir`])
//! and FSSTAT ([`crate::fsstat`]) itself: `nfsserve` answers FILE_SYNC to every WRITE, has
//! no COMMIT, ignores READDIR's cookie and reports a fixed 1 TiB free. It also answers the
//! procedures every small file goes through ([`crate::meta`]: GETATTR, SETATTR, LOOKUP,
//! ACCESS, CREATE, FSINFO, PATHCONF, NULL) and MOUNT ([`crate::mount`]), which saves a
//! loopback round trip each. Their replies and `nfsserve`'s share the client's socket, one
//! whole record at a time. The connection to `nfsserve` is opened by a client
//! connection's first request that must be forwarded, so one that needs none (`nfs-cp`
//! of a file) costs no backend connection.
//!
//! A slot is freed when the reply passes back through the gate (for a WRITE, when its
//! store write has returned). `nfsserve` does not answer
//! a request it takes for a retransmission, so the gate does not forward (or answer) a
//! second request with the xid of one still in flight, and forgets requests that stay unanswered for
//! [`Limits::stale_after`].
//!
//! Memory: each connection buffers at most one record being received (≤ `max_record`,
//! resident only as far as received), at most `max_inflight` requests are inside
//! `nfsserve` or the store (each a few times its size while decoded, copied and written),
//! and at most `max_connections` clients are connected.
//!
//! The private port is bound to 127.0.0.1: processes on the appliance itself could reach
//! it without passing the gate. The appliance runs no other services; the allow-list is
//! about the network.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::allow::AllowList;
use crate::framing::{self, FramingError, HEADER};
use crate::nfs::Export;
use crate::rpc::{
    self, MOUNT_PROGRAM, NFS_PROGRAM, PROC_COMMIT, PROC_FSSTAT, PROC_READDIR, PROC_WRITE,
};
use crate::throttle::{Throttle, suppressed_note};

/// The client's side of a connection, shared by the reply pump and local answers.
type ClientWriter = Arc<tokio::sync::Mutex<BufWriter<OwnedWriteHalf>>>;

/// Bounds the gate enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request record accepted (a 1 MiB WRITE plus its RPC header).
    pub max_record: usize,
    /// Requests inside `nfsserve` at a time, over all connections.
    pub max_inflight: usize,
    /// Requests inside `nfsserve` at a time for one connection.
    pub max_inflight_per_conn: usize,
    /// Client connections at a time.
    pub max_connections: usize,
    /// Time a client may take to send the rest of a record it started.
    pub record_timeout: Duration,
    /// A request unanswered for this long no longer holds a slot.
    pub stale_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record: (1 << 20) + 64 * 1024,
            max_inflight: 16,
            max_inflight_per_conn: 16,
            max_connections: 64,
            record_timeout: Duration::from_secs(60),
            stale_after: Duration::from_secs(120),
        }
    }
}

/// A request forwarded to `nfsserve` and not answered yet.
struct Forwarded {
    _slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    since: Instant,
}

type ForwardedMap = Arc<Mutex<HashMap<u32, Forwarded>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many distinct client addresses are remembered for "new client" log lines.
const SEEN_CLIENTS: usize = 1024;

/// The gate in front of `nfsserve`.
pub struct Gate {
    allow: AllowList,
    limits: Limits,
    backend: SocketAddr,
    inflight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    throttle: Throttle,
    seen: Mutex<HashSet<IpAddr>>,
    local: Option<Export>,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the client sent no complete request within {0:?}")]
    Slow(Duration),
    #[error("a request shorter than an RPC header")]
    Short,
    #[error("cannot connect to nfsserve: {0}")]
    Backend(std::io::Error),
}

impl Gate {
    /// A gate admitting `allow` and forwarding to `nfsserve` at `backend`; WRITE and COMMIT
    /// go to `local` when given.
    pub fn new(
        allow: AllowList,
        limits: Limits,
        backend: SocketAddr,
        local: Option<Export>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            local,
            inflight: Arc::new(Semaphore::new(limits.max_inflight)),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            allow,
            limits,
            backend,
            throttle: Throttle::new(Duration::from_secs(10)),
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Accepts clients on `listener` until the task is dropped.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving who is connected.
                    if let Some(n) = self.throttle.admit("accept") {
                        tracing::error!(
                            "accepting an NFS connection failed: {e}{}",
                            suppressed_note(n)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !self.allow.permits(peer.ip()) {
                self.refuse(sock, peer, "not in the allow-list");
                continue;
            }
            let Ok(slot) = self.connections.clone().try_acquire_owned() else {
                self.refuse(sock, peer, "too many connections");
                continue;
            };
            let gate = self.clone();
            tokio::spawn(async move {
                gate.serve(sock, peer).await;
                drop(slot);
            });
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

    async fn serve(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        self.note_client(peer);
        let _ = client.set_nodelay(true);
        let (mut cr, cw) = client.into_split();
        let writer: ClientWriter = Arc::new(tokio::sync::Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            cw,
        )));
        let conn = Conn {
            pending: Arc::new(Mutex::new(HashMap::new())),
            per_conn: Arc::new(Semaphore::new(self.limits.max_inflight_per_conn)),
            answering: Arc::new(Mutex::new(HashSet::new())),
            writer,
        };
        let reaper = tokio::spawn(reap(Arc::downgrade(&conn.pending), self.limits.stale_after));

        let (started, pump) = tokio::sync::oneshot::channel();
        let mut down = ReplyPump::Waiting(pump);
        let mut upstream = Upstream {
            addr: self.backend,
            writer: None,
            started: Some(started),
        };
        let up = self.pump_requests(&mut cr, &mut upstream, &conn);
        tokio::pin!(up);
        let ended = tokio::select! {
            r = &mut up => Some(r),
            r = down.ended() => {
                if let Err(e) = r {
                    tracing::debug!("NFS connection of {peer}: reply path ended: {e}");
                }
                None
            }
        };
        if let Some(r) = ended {
            match r {
                Ok(()) => {
                    // The client is done sending: deliver the replies still owed.
                    let drained = async {
                        while !lock(&conn.pending).is_empty() || !lock(&conn.answering).is_empty() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = drained => {}
                        _ = down.ended() => {}
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Err(ConnError::Framing(e @ FramingError::TooLarge { .. })) => {
                    if let Some(n) = self.throttle.admit("oversized") {
                        tracing::warn!(
                            "closing the NFS connection of {peer}: {e}{}",
                            suppressed_note(n)
                        );
                    }
                }
                Err(ConnError::Backend(e)) => tracing::error!(
                    "cannot reach the NFS service at {} for {peer}: {e}",
                    self.backend
                ),
                Err(e) => tracing::debug!("NFS connection of {peer} ended: {e}"),
            }
        }
        reaper.abort();
        tracing::debug!("NFS connection of {peer} closed");
    }

    /// Client → nfsserve: one bounded record at a time, each behind two free slots.
    async fn pump_requests(
        &self,
        cr: &mut OwnedReadHalf,
        upstream: &mut Upstream,
        conn: &Conn,
    ) -> Result<(), ConnError> {
        let limit = self.limits.max_record;
        let mut buf = Vec::new();
        loop {
            let Some(first) = framing::read_header(cr).await? else {
                return Ok(());
            };
            let (_, len) = framing::split_header(first);
            if len > limit {
                return Err(FramingError::TooLarge {
                    size: len as u64,
                    limit,
                }
                .into());
            }
            let t = self.limits.record_timeout;
            tokio::time::timeout(t, framing::read_record(cr, first, &mut buf, limit))
                .await
                .map_err(|_| ConnError::Slow(t))??;
            // Slots are taken for complete records only: a client that sends slowly holds its
            // own buffer but nobody else's turn. Waiting here stops reading from it.
            let conn_slot = conn
                .per_conn
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let slot = self
                .inflight
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let xid = framing::xid(&buf[HEADER..]).ok_or(ConnError::Short)?;
            if let Some(export) = &self.local
                && let Some(call) = rpc::parse_call(&buf[HEADER..])
                && call.answered_locally()
            {
                if !lock(&conn.answering).insert(xid) {
                    // A retransmission of a request being answered: as for forwarded ones,
                    // the first one's reply answers both.
                    continue;
                }
                let record = std::mem::take(&mut buf);
                answer_locally(export.clone(), call, record, conn, (conn_slot, slot));
                continue;
            }
            {
                let mut p = lock(&conn.pending);
                if p.contains_key(&xid) {
                    // A retransmission of a request in progress: nfsserve would not answer
                    // it either; the first one's reply answers both.
                    continue;
                }
                p.insert(
                    xid,
                    Forwarded {
                        _slots: (conn_slot, slot),
                        since: Instant::now(),
                    },
                );
            }
            upstream.writer(conn).await?.write_all(&buf).await?;
            if buf.capacity() > 64 * 1024 {
                // Large buffers live only while a slot is held.
                buf = Vec::new();
            }
        }
    }
}

/// The connection to `nfsserve` of one client connection, opened by the first request
/// that must be forwarded: a client that uses only procedures the gate answers (a whole
/// `nfs-cp` of a file) costs no backend connection.
struct Upstream {
    addr: SocketAddr,
    writer: Option<OwnedWriteHalf>,
    /// Hands the reply pump to [`Gate::serve`] once connected.
    started: Option<tokio::sync::oneshot::Sender<JoinHandle<std::io::Result<()>>>>,
}

impl Upstream {
    /// The request path to `nfsserve`, connecting (and starting the reply pump) first if
    /// this is the connection's first forwarded request.
    async fn writer(&mut self, conn: &Conn) -> Result<&mut OwnedWriteHalf, ConnError> {
        if self.writer.is_none() {
            let server = TcpStream::connect(self.addr)
                .await
                .map_err(ConnError::Backend)?;
            let _ = server.set_nodelay(true);
            let (sr, sw) = server.into_split();
            let pump = tokio::spawn(pump_replies(sr, conn.writer.clone(), conn.pending.clone()));
            if let Some(started) = self.started.take() {
                let _ = started.send(pump);
            }
            self.writer = Some(sw);
        }
        Ok(self.writer.as_mut().expect("connected above"))
    }
}

/// The reply path from `nfsserve` of one client connection, as [`Gate::serve`] sees it.
enum ReplyPump {
    /// Not connected yet (maybe never).
    Waiting(tokio::sync::oneshot::Receiver<JoinHandle<std::io::Result<()>>>),
    Running(JoinHandle<std::io::Result<()>>),
    /// Ended, or the request side ended without ever connecting.
    Over,
}

impl ReplyPump {
    /// Returns when the reply path has ended (never if it never started). Cancel-safe:
    /// `serve` polls it in two `select!`s in turn.
    async fn ended(&mut self) -> std::io::Result<()> {
        if let ReplyPump::Waiting(rx) = self {
            match rx.await {
                Ok(task) => *self = ReplyPump::Running(task),
                Err(_) => *self = ReplyPump::Over,
            }
        }
        let ReplyPump::Running(task) = self else {
            return std::future::pending().await;
        };
        let r = task.await;
        *self = ReplyPump::Over;
        r.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

impl Drop for ReplyPump {
    fn drop(&mut self) {
        // The client connection is gone: so is its backend connection.
        if let ReplyPump::Running(task) = self {
            task.abort();
        }
    }
}

/// Per-connection state.
struct Conn {
    pending: ForwardedMap,
    per_conn: Arc<Semaphore>,
    /// Xids of the local answers not yet written to the client.
    answering: Arc<Mutex<HashSet<u32>>>,
    writer: ClientWriter,
}

/// Answers a call the appliance handles itself (see [`rpc::CallHeader::answered_locally`])
/// in its own task; its slots are held until the store write behind it (if any) has
/// returned.
fn answer_locally(
    export: Export,
    call: rpc::CallHeader,
    record: Vec<u8>,
    conn: &Conn,
    slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    let writer = conn.writer.clone();
    let owed = conn.answering.clone();
    tokio::spawn(async move {
        let (reply, background) = match (call.prog, call.procedure) {
            (NFS_PROGRAM, PROC_WRITE) => {
                let a = export.rpc_write(&call, record, HEADER).await;
                (a.reply, a.background)
            }
            (NFS_PROGRAM, PROC_COMMIT) => (export.rpc_commit(&call, &record, HEADER).await, None),
            (NFS_PROGRAM, PROC_READDIR) => (export.rpc_readdir(&call, &record, HEADER).await, None),
            (NFS_PROGRAM, PROC_FSSTAT) => (export.rpc_fsstat(&call, &record, HEADER).await, None),
            (NFS_PROGRAM, _) => (export.rpc_meta(&call, &record, HEADER).await, None),
            (MOUNT_PROGRAM, _) => (export.rpc_mount(&call, &record, HEADER).await, None),
            (p, _) => unreachable!("program {p} is not answered locally"),
        };
        {
            let mut w = writer.lock().await;
            if w.write_all(&reply).await.is_ok() {
                let _ = w.flush().await;
            }
        }
        lock(&owed).remove(&call.xid);
        if let Some(b) = background {
            let _ = b.await;
        }
        drop(slots);
    });
}

/// nfsserve → client: copies each reply through (one whole record under the writer's
/// lock) and frees its request's slots.
async fn pump_replies(
    sr: OwnedReadHalf,
    writer: ClientWriter,
    pending: ForwardedMap,
) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, sr);
    let mut record_xid: Option<u32> = None;
    let mut first_fragment = true;
    loop {
        let Some(h) = framing::read_header(&mut r).await? else {
            return Ok(());
        };
        let (last, len) = framing::split_header(h);
        let mut w = writer.lock().await;
        w.write_all(&h.to_be_bytes()).await?;
        let mut left = len as u64;
        if first_fragment && len >= 4 {
            let mut x = [0u8; 4];
            r.read_exact(&mut x).await?;
            w.write_all(&x).await?;
            record_xid = Some(u32::from_be_bytes(x));
            left -= 4;
        }
        first_fragment = last;
        while left > 0 {
            let chunk = r.fill_buf().await?;
            if chunk.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let n = chunk.len().min(left as usize);
            w.write_all(&chunk[..n]).await?;
            r.consume(n);
            left -= n as u64;
        }
        if last {
            w.flush().await?;
            drop(w);
            if let Some(x) = record_xid.take() {
                lock(&pending).remove(&x);
            }
        }
    }
}

/// Forgets requests nobody will answer (see the module notes), so they free their slots.
async fn reap(pending: Weak<Mutex<HashMap<u32, Forwarded>>>, stale_after: Duration) {
    let mut tick = tokio::time::interval(stale_after / 4);
    loop {
        tick.tick().await;
        let Some(p) = pending.upgrade() else { return };
        let mut p = lock(&p);
        let before = p.len();
        p.retain(|_, v| v.since.elapsed() < stale_after);
        if p.len() < before {
            tracing::debug!("forgot {} unanswered NFS requests", before - p.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A stand-in for nfsserve: reports each request's xid, answers when told to.
    async fn backend() -> (
        SocketAddr,
        mpsc::UnboundedReceiver<u32>,
        mpsc::UnboundedSender<u32>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let (answer_tx, mut answer_rx) = mpsc::unbounded_channel::<u32>();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            tokio::spawn(async move {
                while let Some(xid) = answer_rx.recv().await {
                    let mut reply = (LAST_FRAG | 8).to_be_bytes().to_vec();
                    reply.extend_from_slice(&xid.to_be_bytes());
                    reply.extend_from_slice(b"REPL");
                    if w.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = Vec::new();
            while let Ok(Some(h)) = framing::read_header(&mut r).await {
                framing::read_record(&mut r, h, &mut buf, 1 << 30)
                    .await
                    .unwrap();
                seen_tx.send(framing::xid(&buf[4..]).unwrap()).unwrap();
            }
        });
        (addr, seen_rx, answer_tx)
    }

    const LAST_FRAG: u32 = framing::LAST_FRAGMENT;

    fn request(xid: u32) -> Vec<u8> {
        let mut v = (LAST_FRAG | 12).to_be_bytes().to_vec();
        v.extend_from_slice(&xid.to_be_bytes());
        v.extend_from_slice(b"CALLCALL");
        v
    }

    async fn start(allow: &[&str], limits: Limits, backend: SocketAddr) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let gate = Gate::new(AllowList::parse(allow).unwrap(), limits, backend, None);
        tokio::spawn(gate.run(l));
        addr
    }

    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn clients_outside_the_allow_list_are_reset_at_connect() {
        let (b, mut seen, _answer) = backend().await;
        let g = start(&["10.0.0.0/8"], Limits::default(), b).await;
        let mut s = TcpStream::connect(g).await.unwrap();
        let _ = s.write_all(&request(1)).await;
        assert!(
            closed(&mut s).await,
            "the refused connection must be closed at once"
        );
        assert!(seen.try_recv().is_err(), "nothing reached nfsserve");
    }

    #[tokio::test]
    async fn replies_pass_and_an_oversized_request_closes_the_connection() {
        let (b, mut seen, answer) = backend().await;
        let g = start(&["127.0.0.0/8"], Limits::default(), b).await;
        let mut s = TcpStream::connect(g).await.unwrap();
        s.write_all(&request(7)).await.unwrap();
        assert_eq!(seen.recv().await, Some(7));
        answer.send(7).unwrap();
        let mut reply = [0u8; 12];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[4..8], &7u32.to_be_bytes());
        assert_eq!(&reply[8..], b"REPL");
        // A header announcing 2 GiB: the gate closes without reading or forwarding it.
        s.write_all(&(LAST_FRAG | 0x7fff_ffff).to_be_bytes())
            .await
            .unwrap();
        assert!(closed(&mut s).await);
        assert!(seen.try_recv().is_err());
    }

    #[tokio::test]
    async fn requests_in_flight_are_bounded_and_freed_by_replies() {
        let (b, mut seen, answer) = backend().await;
        let limits = Limits {
            max_inflight_per_conn: 3,
            ..Limits::default()
        };
        let g = start(&[], limits, b).await;
        let mut s = TcpStream::connect(g).await.unwrap();
        for xid in 1..=10 {
            s.write_all(&request(xid)).await.unwrap();
        }
        for want in 1..=3 {
            assert_eq!(seen.recv().await, Some(want));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            seen.try_recv().is_err(),
            "a fourth request went in while three were unanswered"
        );
        answer.send(2).unwrap();
        assert_eq!(seen.recv().await, Some(4), "a reply frees one slot");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(seen.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_retransmission_of_a_request_in_flight_is_not_forwarded() {
        let (b, mut seen, answer) = backend().await;
        let g = start(&[], Limits::default(), b).await;
        let mut s = TcpStream::connect(g).await.unwrap();
        s.write_all(&request(5)).await.unwrap();
        s.write_all(&request(5)).await.unwrap();
        s.write_all(&request(6)).await.unwrap();
        assert_eq!(seen.recv().await, Some(5));
        assert_eq!(seen.recv().await, Some(6));
        answer.send(5).unwrap();
        let mut reply = [0u8; 12];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[4..8], &5u32.to_be_bytes());
        // Answered: the same xid may come again later and is forwarded then.
        s.write_all(&request(5)).await.unwrap();
        assert_eq!(seen.recv().await, Some(5));
    }

    /// A stand-in for nfsserve that takes any number of connections and reports xids.
    async fn backend_many() -> (SocketAddr, mpsc::UnboundedReceiver<u32>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let (mut r, _w) = s.into_split();
                    let mut buf = Vec::new();
                    while let Ok(Some(h)) = framing::read_header(&mut r).await {
                        framing::read_record(&mut r, h, &mut buf, 1 << 30)
                            .await
                            .unwrap();
                        let _ = seen_tx.send(framing::xid(&buf[4..]).unwrap());
                    }
                });
            }
        });
        (addr, seen_rx)
    }

    #[tokio::test]
    async fn a_slow_sender_holds_no_slot() {
        let (b, mut seen) = backend_many().await;
        let limits = Limits {
            max_inflight: 1,
            ..Limits::default()
        };
        let g = start(&[], limits, b).await;
        // Starts a 1000-byte record, sends 10 bytes of it, and stalls.
        let mut slow = TcpStream::connect(g).await.unwrap();
        slow.write_all(&(LAST_FRAG | 1000).to_be_bytes())
            .await
            .unwrap();
        slow.write_all(&[1u8; 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut quick = TcpStream::connect(g).await.unwrap();
        quick.write_all(&request(42)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
        assert_eq!(
            got.ok().flatten(),
            Some(42),
            "the complete request must not wait for the slow one"
        );
    }

    /// A record of NFSv3 or MOUNT v3 `procedure` with `args`.
    fn rpc_call(xid: u32, prog: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [xid, 0, 2, prog, 3, procedure, 0, 0, 0, 0] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(args);
        let mut rec = (LAST_FRAG | v.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(&v);
        rec
    }

    async fn read_reply(s: &mut TcpStream) -> (u32, u32) {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await.unwrap();
        let (_, len) = framing::split_header(u32::from_be_bytes(h));
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        let word = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().unwrap());
        (word(0), word(20))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_procedures_open_no_backend_connection() {
        let fx = crate::testutil::Fixture::new(64 << 20);
        let export = Export::new(fx.unlocked());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = l.local_addr().unwrap();
        let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = accepted_tx.send(());
                // Holds the connection open; answers nothing.
                tokio::spawn(async move {
                    let mut s = s;
                    let mut b = [0u8; 1024];
                    while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                });
            }
        });
        let gl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let g = gl.local_addr().unwrap();
        let gate = Gate::new(
            AllowList::parse::<&str>(&[]).unwrap(),
            Limits::default(),
            backend,
            Some(export.clone()),
        );
        tokio::spawn(gate.run(gl));

        let mut s = TcpStream::connect(g).await.unwrap();
        let mut root = Vec::new();
        {
            use nfsserve::vfs::NFSFileSystem;
            use nfsserve::xdr::XDR;
            export.id_to_fh(1).serialize(&mut root).unwrap();
        }
        let mut mnt = Vec::new();
        {
            use nfsserve::xdr::XDR;
            b"/".to_vec().serialize(&mut mnt).unwrap();
        }
        let calls = [
            rpc_call(1, rpc::MOUNT_PROGRAM, 0, &[]),
            rpc_call(2, rpc::MOUNT_PROGRAM, 1, &mnt),
            rpc_call(3, rpc::NFS_PROGRAM, 0, &[]),
            rpc_call(4, rpc::NFS_PROGRAM, rpc::PROC_FSINFO, &root),
            rpc_call(5, rpc::NFS_PROGRAM, rpc::PROC_GETATTR, &root),
        ];
        for (i, c) in calls.iter().enumerate() {
            s.write_all(c).await.unwrap();
            assert_eq!(read_reply(&mut s).await, (i as u32 + 1, 0), "answered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(accepted.try_recv().is_err(), "no backend connection yet");
        // The first request that must be forwarded (READ) opens it, once.
        s.write_all(&rpc_call(6, rpc::NFS_PROGRAM, 6, &root))
            .await
            .unwrap();
        s.write_all(&rpc_call(7, rpc::NFS_PROGRAM, 6, &root))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), accepted.recv()).await;
        assert_eq!(got.ok().flatten(), Some(()), "READ went to nfsserve");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(accepted.try_recv().is_err(), "one backend connection");
    }
}
