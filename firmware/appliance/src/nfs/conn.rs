//! One client connection: receives request records, runs each as its own task, sends
//! the replies.
//!
//! What a connection may hold, and for how long:
//! - **Waiting for a request** it holds a socket and a few hundred bytes. After
//!   [`Limits::idle_timeout`] with nothing in flight it is closed; the registry may close
//!   it sooner for a newcomer ([`super::server`]).
//! - **Receiving a record**: the record mark says how long it is; a record over
//!   [`Limits::max_record`] closes the connection before anything is allocated. The record's
//!   size is then taken from the server's receive budget (waiting, and not reading, while
//!   the budget is spent: TCP flow control slows the client down), and the client has
//!   [`Limits::record_timeout`] from its first byte to send the rest. A buffer is reserved
//!   but only the bytes that arrive become resident.
//! - **Answering**: a complete record takes a slot of the connection and one of the
//!   server; without free slots the connection stops reading. The record's budget and slots
//!   are held until the reply is sent and any background store write has returned.
//!   A client that does not take its replies off the socket within
//!   [`Limits::reply_timeout`] is disconnected.
//!
//! A retransmission of a request this connection is still answering (same xid) is dropped:
//! the first one's reply answers both.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::framing::{self, FramingError, HEADER};
use super::server::{ConnState, Server};
use crate::throttle::suppressed_note;

/// Bytes read from the socket at a time for small requests (resident per active connection).
const READ_BUFFER: usize = 4096;

/// The client's side of the socket, shared by the tasks answering its requests.
type Writer = Arc<tokio::sync::Mutex<BufWriter<OwnedWriteHalf>>>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the client sent no complete request within {0:?} of starting one")]
    Slow(Duration),
    #[error("the client was idle for {0:?}")]
    Idle(Duration),
    #[error("closed to make room for a new client")]
    Evicted,
    #[error("the client did not take a reply within {0:?}")]
    NotReading(Duration),
}

/// What the tasks of one connection share.
struct Shared {
    writer: Writer,
    /// Xids being answered.
    answering: Mutex<HashSet<u32>>,
    per_conn: Arc<Semaphore>,
    /// Tasks still answering.
    running: std::sync::atomic::AtomicUsize,
    idle: Notify,
    /// Set when a reply could not be sent: the connection is closed.
    broken: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `sock` until the client leaves, misbehaves, idles out or is evicted.
pub async fn serve(
    server: &Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    state: &Arc<ConnState>,
) {
    let _ = sock.set_nodelay(true);
    let (reader, writer) = sock.into_split();
    // Small requests arrive whole in one read; a WRITE's payload bypasses the buffer.
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let shared = Arc::new(Shared {
        writer: Arc::new(tokio::sync::Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            writer,
        ))),
        answering: Mutex::new(HashSet::new()),
        per_conn: Arc::new(Semaphore::new(server.limits.max_inflight_per_conn)),
        running: Default::default(),
        idle: Notify::new(),
        broken: Notify::new(),
    });
    let ended = tokio::select! {
        r = receive(server, &mut reader, peer, state, &shared) => r,
        _ = state.closing() => Err(ConnError::Evicted),
        _ = shared.broken.notified() => Err(ConnError::NotReading(server.limits.reply_timeout)),
    };
    match ended {
        Ok(()) => {
            // The client is done sending: deliver the replies still owed.
            let drained = async {
                while shared.running.load(std::sync::atomic::Ordering::Acquire) > 0 {
                    let notified = shared.idle.notified();
                    if shared.running.load(std::sync::atomic::Ordering::Acquire) == 0 {
                        break;
                    }
                    notified.await;
                }
            };
            let _ = tokio::time::timeout(server.limits.reply_timeout, drained).await;
        }
        Err(ConnError::Framing(e @ FramingError::TooLarge { .. })) => {
            if let Some(n) = server.throttle.admit("oversized") {
                tracing::warn!(
                    "closing the NFS connection of {peer}: {e}{}",
                    suppressed_note(n)
                );
            }
        }
        Err(e @ (ConnError::Slow(_) | ConnError::NotReading(_))) => {
            if let Some(n) = server.throttle.admit("slow") {
                tracing::info!(
                    "closing the NFS connection of {peer}: {e}{}",
                    suppressed_note(n)
                );
            }
        }
        Err(e) => tracing::debug!("NFS connection of {peer} ended: {e}"),
    }
    tracing::debug!("NFS connection of {peer} closed");
}

/// Reads request records until the end of the stream, handing each to its own task.
async fn receive(
    server: &Arc<Server>,
    reader: &mut BufReader<OwnedReadHalf>,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    shared: &Arc<Shared>,
) -> Result<(), ConnError> {
    let limits = &server.limits;
    loop {
        // Idle: waiting for the first byte of a record costs nothing but the socket.
        let waiting = tokio::time::timeout(limits.idle_timeout, reader.fill_buf()).await;
        let started = match waiting {
            Ok(Ok([])) => return Ok(()),
            Ok(Ok(_)) => tokio::time::Instant::now(),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if shared.running.load(std::sync::atomic::Ordering::Acquire) > 0 => continue,
            Err(_) => return Err(ConnError::Idle(limits.idle_timeout)),
        };
        let slow = ConnError::Slow(limits.record_timeout);
        let deadline = started + limits.record_timeout;
        let mut mark = [0u8; HEADER];
        tokio::time::timeout_at(deadline, reader.read_exact(&mut mark))
            .await
            .map_err(|_| ConnError::Slow(limits.record_timeout))??;
        let header = u32::from_be_bytes(mark);
        let (last, len) = framing::split_header(header);
        if len > limits.max_record {
            return Err(FramingError::TooLarge {
                size: len as u64,
                limit: limits.max_record,
            }
            .into());
        }
        // A record in several fragments may grow to the limit: budget for all of it.
        let need = if last { len } else { limits.max_record };
        let budget = server
            .budget
            .clone()
            .acquire_many_owned(need.div_ceil(1024).max(1) as u32)
            .await
            .expect("never closed");
        // The client's time runs while it sends, not while the server's budget is spent.
        let deadline = deadline.max(tokio::time::Instant::now() + limits.record_timeout / 2);
        let mut record = Vec::new();
        tokio::time::timeout_at(
            deadline,
            framing::read_record(reader, header, &mut record, limits.max_record),
        )
        .await
        .map_err(|_| slow)??;
        let Some(xid) = framing::xid(&record[HEADER..]) else {
            // Not even an xid: no reply can be formed.
            continue;
        };
        if !lock(&shared.answering).insert(xid) {
            // A retransmission of a request being answered: the first reply answers both.
            continue;
        }
        // Slots for complete records only: a slow sender holds its own budget, nobody's turn.
        let conn_slot = shared
            .per_conn
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let slot = server
            .inflight
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        state.touch(server.epoch);
        answer(
            server,
            peer,
            state,
            shared,
            xid,
            record,
            (budget, conn_slot, slot),
        );
    }
}

/// Answers one record in its own task.
fn answer(
    server: &Arc<Server>,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    shared: &Arc<Shared>,
    xid: u32,
    record: Vec<u8>,
    held: (
        OwnedSemaphorePermit,
        OwnedSemaphorePermit,
        OwnedSemaphorePermit,
    ),
) {
    let server = server.clone();
    let state = state.clone();
    let shared = shared.clone();
    shared
        .running
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    tokio::spawn(async move {
        let _busy = state.busy();
        let outcome = server.dispatcher.dispatch(peer.ip(), record).await;
        if let Some(reply) = outcome.reply {
            let sent = async {
                let mut w = shared.writer.lock().await;
                w.write_all(&reply).await?;
                w.flush().await
            };
            match tokio::time::timeout(server.limits.reply_timeout, sent).await {
                Ok(Ok(())) => state.touch(server.epoch),
                Ok(Err(_)) | Err(_) => shared.broken.notify_one(),
            }
        }
        lock(&shared.answering).remove(&xid);
        if let Some(b) = outcome.background {
            let _ = b.await;
        }
        drop(held);
        if shared
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            shared.idle.notify_waiters();
        }
    });
}
