//! The control API and the appliance's web page, over HTTPS on one port.
//!
//! - [`api`]: JSON routes under `/api/v1` (unlock, sign-in, status, bundles, seal, bill of
//!   materials), for `odt`, `curl` and monitoring; documented in `docs/control-api.md`.
//! - [`page`]: the server-rendered page at `/` (sign-in, dashboard, bundles, "Prepare to
//!   ship", custody log), no script or style from elsewhere.
//! - [`sessions`]: bearer tokens and sign-in challenges, in memory.
//! - [`ship`]: the seal and the bill of materials (built by `odt_store::trip::bom`), for the API and the page.
//!
//! TLS uses the certificate made at provisioning ([`odt_store::crypto::tls`]); clients pin its
//! fingerprint. Connections are bounded so that idle or slow clients cannot lock a customer
//! out: at most [`Limits::per_address`] from one address and [`Limits::total`] in all, a
//! TLS handshake must finish within [`Limits::handshake`], request headers (and the next
//! request on a kept-alive connection) within [`Limits::headers`], a body within 15 s. A
//! connection over a limit is answered `503` with the error kind `busy` (when it completes
//! its handshake quickly) instead of a silent reset, so `odt` can say what happened.

pub mod api;
pub mod page;
pub mod sessions;
pub mod ship;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use odt_store::format::journal::Time;
use odt_store::trip::control_api::ErrorKind;
use odt_store::trip::custody::{self, Event, What};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::state::Appliance;

/// Bounds of the control listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at a time from one address.
    pub per_address: usize,
    /// Connections open at a time in all.
    pub total: usize,
    /// Time to finish the TLS handshake.
    pub handshake: Duration,
    /// Time to send a request's headers, and between requests on a kept-alive connection.
    pub headers: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_address: 48,
            total: 256,
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(15),
        }
    }
}

/// Connections over a limit answered `503` at a time (beyond that they are just closed).
const REFUSALS_AT_ONCE: usize = 8;
/// Custody events kept in memory until they can be journaled (locked, or after the seal).
const UNJOURNALED_KEPT: usize = odt_store::trip::custody::MAX_EVENTS;

/// The address a request came from (an extension on every request).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What the handlers share.
pub struct Ctx {
    /// The appliance's state and store.
    pub app: Arc<Appliance>,
    /// Sessions and sign-in challenges.
    pub sessions: sessions::Sessions,
    /// Where the NFS export listens (for the page's mount commands).
    pub nfs: SocketAddr,
    /// Custody events not in the store's log: those of a locked appliance (journaled at
    /// the unlock) and those after the seal (never: the seal signs the journal's end).
    unjournaled: Mutex<VecDeque<Event>>,
    /// When this run started.
    started: Time,
}

impl Ctx {
    /// A context for `app` whose export listens on `nfs`.
    pub fn new(app: Arc<Appliance>, nfs: SocketAddr) -> Ctx {
        Ctx {
            app,
            sessions: sessions::Sessions::default(),
            nfs,
            unjournaled: Mutex::new(VecDeque::new()),
            started: Time::now(),
        }
    }

    fn unjournaled(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.unjournaled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an unlock or sign-in attempt in the custody log.
    pub async fn note_attempt(&self, peer: Peer, ok: bool) {
        let what = if ok {
            What::CodeAccepted
        } else {
            What::WrongCode
        };
        self.note(what, Some(peer)).await;
    }

    /// Records a custody event: journaled at once when the store is open and not sealed
    /// (in a worker: it waits for durability), else kept in memory.
    pub async fn note(&self, what: What, peer: Option<Peer>) {
        let event = Event {
            time: Time::now(),
            what,
            from: peer.map(|p| p.0.ip().to_string()).unwrap_or_default(),
        };
        match self.app.store().filter(|s| !s.is_sealed()).cloned() {
            Some(store) => {
                let e = event.clone();
                let r = tokio::task::spawn_blocking(move || custody::record(&store, vec![e])).await;
                if !matches!(r, Ok(Ok(()))) {
                    tracing::warn!("custody event {what:?} not journaled (the store refused it)");
                    self.keep(event);
                }
            }
            None => self.keep(event),
        }
    }

    fn keep(&self, event: Event) {
        let mut u = self.unjournaled();
        if u.len() >= UNJOURNALED_KEPT {
            u.pop_front();
        }
        u.push_back(event);
    }

    /// Journals this run's start and what happened while locked: called once the store is
    /// unlocked for the first time in this run.
    pub async fn journal_pending(&self) {
        let Some(store) = self.app.store().filter(|s| !s.is_sealed()).cloned() else {
            return;
        };
        let mut events = vec![Event {
            time: self.started,
            what: What::Started,
            from: String::new(),
        }];
        events.extend(self.unjournaled().drain(..));
        let keep = events.clone();
        let r = tokio::task::spawn_blocking(move || custody::record(&store, events)).await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::warn!("the custody events of the locked appliance were not journaled");
            for e in keep.into_iter().skip(1) {
                self.keep(e);
            }
        }
    }

    /// The custody log: the store's (every run up to now, once unlocked), then the events
    /// not in it, oldest first.
    pub fn custody(&self) -> (custody::Log, Vec<Event>) {
        let log = self
            .app
            .store()
            .map(|s| custody::log(s))
            .unwrap_or_default();
        (log, self.unjournaled().iter().cloned().collect())
    }
}

/// The TLS configuration could not be made from the superblock's identity.
#[derive(Debug, thiserror::Error)]
#[error(
    "the TLS certificate or key in the superblock is unusable ({0}); provision the device \
     set again with this version of `odt provision`"
)]
pub struct TlsError(String);

/// The server side of TLS with the appliance's identity (ring, TLS 1.2 and 1.3).
pub fn tls_acceptor(app: &Appliance) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let id = app.tls();
    let provider = odt_store::crypto::tls::crypto_provider();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.0.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(id.cert_der.clone())], key)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every route: the API, the page, and a JSON 404.
pub fn router(ctx: Arc<Ctx>) -> Router {
    api::router()
        .merge(page::router())
        .fallback(api::not_found)
        .with_state(ctx)
}

/// Open connections, per address and in all.
#[derive(Default)]
struct Counts {
    per: HashMap<IpAddr, usize>,
    total: usize,
}

/// Releases a connection's place in [`Counts`] when dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.ip);
            }
        }
    }
}

fn admit(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
    let here = c.per.get(&ip).copied().unwrap_or(0);
    if c.total >= limits.total || here >= limits.per_address {
        return None;
    }
    c.total += 1;
    *c.per.entry(ip).or_insert(0) += 1;
    Some(Slot {
        counts: counts.clone(),
        ip,
    })
}

/// Serves the control API and the page on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, acceptor: TlsAcceptor, ctx: Arc<Ctx>, limits: Limits) {
    let app = router(ctx);
    let busy = Router::new().fallback(|| async {
        api::error(
            ErrorKind::Busy,
            "the appliance has too many control connections open (from your address or in \
             all); close idle ones or try again in a few seconds",
        )
    });
    let counts = Arc::new(Mutex::new(Counts::default()));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("accepting a control connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match admit(&counts, peer.ip(), &limits) {
            Some(slot) => {
                let (acceptor, app, limits) = (acceptor.clone(), app.clone(), limits.clone());
                tokio::spawn(async move {
                    serve(sock, peer, acceptor, app, &limits).await;
                    drop(slot);
                });
            }
            None => {
                let Ok(permit) = refusals.clone().try_acquire_owned() else {
                    tracing::debug!("control connection from {peer} closed: over the limits");
                    continue;
                };
                tracing::warn!(
                    "control connection from {peer} refused: at most {} per address and {} in \
                     all",
                    limits.per_address,
                    limits.total
                );
                let (acceptor, busy) = (acceptor.clone(), busy.clone());
                let quick = Limits {
                    handshake: Duration::from_secs(2),
                    headers: Duration::from_secs(2),
                    ..limits.clone()
                };
                tokio::spawn(async move {
                    serve(sock, peer, acceptor, busy, &quick).await;
                    drop(permit);
                });
            }
        }
    }
}

/// TLS, then HTTP/1.1 requests on one connection until the client closes it or a time
/// limit passes.
async fn serve(
    sock: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    limits: &Limits,
) {
    let _ = sock.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(sock)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("control: TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(
                "control: no TLS handshake from {peer} in {:?}",
                limits.handshake
            );
            return;
        }
    };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), svc);
    if let Err(e) = conn.await {
        tracing::debug!("control connection from {peer}: {e}");
    }
}
