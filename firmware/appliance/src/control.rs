//! The control API server: unlock, status (and a test hook), JSON lines over TCP.
//!
//! Protocol and authentication are defined with the message types in
//! [`odt_store::trip::control_api`]: hello with a challenge, one request, one response. The unlock
//! code is never logged; request lines are zeroized after parsing.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use odt_store::crypto::keys::UnlockCode;
use odt_store::error::one_line;
use odt_store::trip::control_api::{
    self, ErrorKind, ErrorReply, Hello, Op, PROTOCOL, Request, Response, State,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::state::{Appliance, StateError};

/// Control connections served at a time.
const MAX_CLIENTS: usize = 8;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply {
        kind,
        message: message.into(),
    })
}

/// Serves the control API on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, app: Arc<Appliance>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("accepting a control connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("refused control connection from {peer}: too many at once");
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(sock, peer, app).await {
                tracing::debug!("control connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}

async fn serve(sock: TcpStream, peer: SocketAddr, app: Arc<Appliance>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let challenge = control_api::new_challenge();
    let hello = Hello {
        protocol: PROTOCOL,
        challenge: hex::encode(challenge),
    };
    send(&mut w, &hello).await?;
    let line = tokio::time::timeout(REQUEST_TIMEOUT, read_line(r))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))??;
    let response = if line.len() > control_api::MAX_LINE {
        error(
            ErrorKind::BadRequest,
            format!("request longer than {} bytes", control_api::MAX_LINE),
        )
    } else {
        match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handle(req, &challenge, peer, &app).await,
            Err(e) => error(
                ErrorKind::BadRequest,
                format!("the request is not a control API message: {e}"),
            ),
        }
    };
    send(&mut w, &response).await?;
    w.shutdown().await
}

/// Reads one request line (up to one byte past the limit) into memory that is zeroized
/// afterwards: it may hold the unlock code.
async fn read_line(mut r: OwnedReadHalf) -> std::io::Result<Zeroizing<Vec<u8>>> {
    // Sized up front so that it never reallocates (a reallocation would leave a copy).
    let mut line = Zeroizing::new(Vec::with_capacity(control_api::MAX_LINE + 512));
    let mut chunk = Zeroizing::new([0u8; 512]);
    loop {
        let n = r.read(&mut chunk[..]).await?;
        if n == 0 {
            return Ok(line);
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..end]);
            return Ok(line);
        }
        line.extend_from_slice(&chunk[..n]);
        if line.len() > control_api::MAX_LINE {
            return Ok(line);
        }
    }
}

async fn send<T: serde::Serialize>(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    msg: &T,
) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    text.push(b'\n');
    w.write_all(&text).await
}

/// Lets writes that clients were already told about reach the store before a seal.
async fn settle_writes(app: &Appliance) {
    let wait = Duration::from_secs(60);
    if tokio::time::timeout(wait, app.pending().drain())
        .await
        .is_err()
    {
        tracing::warn!(
            "writes still running after {wait:?}: sealing without them (their clients see ROFS at COMMIT)"
        );
    }
}

/// Answers one request.
pub async fn handle(
    req: Request,
    challenge: &[u8; control_api::CHALLENGE_LEN],
    peer: SocketAddr,
    app: &Arc<Appliance>,
) -> Response {
    let op_name = req.op.name();
    match &req.op {
        Op::Unlock { code } => {
            let code = match UnlockCode::from_str(code.expose()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("control: malformed unlock code from {peer}");
                    return error(ErrorKind::BadRequest, e.to_string());
                }
            };
            let a = app.clone();
            let r = tokio::task::spawn_blocking(move || a.unlock(&code)).await;
            match r {
                Ok(Ok(report)) => {
                    if report.already_unlocked {
                        tracing::info!(
                            "control: unlock from {peer}: already unlocked (code checked)"
                        );
                    } else {
                        let st = app.store().map(|s| s.stats()).unwrap_or_default();
                        tracing::info!(
                            "control: unlocked by {peer}: job {} ({}), {} files, {} bytes stored; \
                             the export is now {}",
                            report.job_id,
                            report.job_name,
                            st.files,
                            st.logical_bytes,
                            if report.state == State::Sealed {
                                "read-only (sealed)"
                            } else {
                                "read-write"
                            }
                        );
                    }
                    Response::Unlocked(report)
                }
                Ok(Err(e @ StateError::WrongCode { .. })) => {
                    tracing::warn!("control: wrong unlock code from {peer}");
                    error(ErrorKind::WrongCode, e.to_string())
                }
                Ok(Err(e)) => {
                    let e = one_line(&e);
                    tracing::error!("control: unlock from {peer} failed: {e}");
                    error(ErrorKind::Failed, e)
                }
                Err(e) => error(ErrorKind::Failed, format!("unlock task failed: {e}")),
            }
        }
        Op::Status => {
            if app.state() == State::Locked {
                // No key yet: the state alone, to anyone who asks.
                return Response::Status(app.status());
            }
            if !app.authenticate(challenge, &req.op, req.mac.as_deref()) {
                tracing::warn!("control: unauthenticated {op_name} request from {peer}");
                return error(
                    ErrorKind::Unauthenticated,
                    "status needs the unlock code: run `odt status` with the code on stdin or --code-file",
                );
            }
            let a = app.clone();
            match tokio::task::spawn_blocking(move || a.status()).await {
                Ok(s) => Response::Status(s),
                Err(e) => error(ErrorKind::Failed, format!("status task failed: {e}")),
            }
        }
        Op::Bundles | Op::Seal { .. } => {
            if app.state() == State::Locked {
                return error(ErrorKind::Locked, StateError::Locked.to_string());
            }
            if !app.authenticate(challenge, &req.op, req.mac.as_deref()) {
                tracing::warn!("control: unauthenticated {op_name} request from {peer}");
                return error(
                    ErrorKind::Unauthenticated,
                    format!("{op_name} needs the unlock code (stdin or --code-file)"),
                );
            }
            if matches!(req.op, Op::Seal { .. }) {
                settle_writes(app).await;
            }
            let a = app.clone();
            let op = req.op.clone();
            let r = tokio::task::spawn_blocking(move || match op {
                Op::Seal { force } => a.seal(force).map(Ok),
                _ => a.bundles().map(Err),
            })
            .await;
            match r {
                Ok(Ok(Err(report))) => Response::Bundles(report),
                Ok(Ok(Ok(out))) => match (out.sealed, out.refused) {
                    (Some(sealed), _) => {
                        let rec = &sealed.seal.record;
                        tracing::info!(
                            "control: SEALED by {peer}: code {}, {} files, {} bytes, {} bundle(s); \
                             the export is now read-only",
                            sealed.code,
                            rec.files,
                            rec.bytes,
                            out.bundles.bundles.len()
                        );
                        Response::Sealed(control_api::SealReply {
                            seal_code: sealed.code.clone(),
                            job_id: rec.job_id.clone(),
                            files: rec.files,
                            dirs: rec.dirs,
                            bytes: rec.bytes,
                            sealed_unix: rec.sealed.secs,
                            bundles: out.bundles,
                        })
                    }
                    (None, reason) => {
                        let reason = reason.unwrap_or_else(|| "bundles have errors".into());
                        tracing::warn!("control: seal refused for {peer}: {reason}");
                        Response::SealRefused {
                            reason,
                            bundles: out.bundles,
                        }
                    }
                },
                Ok(Err(e)) => {
                    let e = one_line(&e);
                    tracing::error!("control: {op_name} from {peer} failed: {e}");
                    error(ErrorKind::Failed, e)
                }
                Err(e) => error(ErrorKind::Failed, format!("{op_name} task failed: {e}")),
            }
        }
        Op::TestSeal => {
            if app.state() == State::Locked {
                return error(ErrorKind::Locked, StateError::Locked.to_string());
            }
            if !app.authenticate(challenge, &req.op, req.mac.as_deref()) {
                tracing::warn!("control: unauthenticated {op_name} request from {peer}");
                return error(
                    ErrorKind::Unauthenticated,
                    "test-seal needs the unlock code",
                );
            }
            settle_writes(app).await;
            match app.test_seal() {
                Ok(()) => {
                    tracing::warn!(
                        "control: TEST HOOK: export set read-only by {peer} (no seal record written)"
                    );
                    Response::Status(app.status())
                }
                Err(e) => error(ErrorKind::BadRequest, one_line(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;
    use odt_store::trip::control_api::{ControlKey, SecretText, StatusReport};
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// One exchange over the wire, as a client does it. `sign` picks the MAC key.
    async fn exchange(addr: SocketAddr, op: Op, sign: Option<&ControlKey>) -> Response {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let hello: Hello = serde_json::from_str(&line).unwrap();
        assert_eq!(hello.protocol, PROTOCOL);
        let ch = control_api::parse_challenge(&hello.challenge).unwrap();
        let mac = sign.map(|k| hex::encode(k.mac(&ch, &op)));
        let mut text = serde_json::to_vec(&Request { op, mac }).unwrap();
        text.push(b'\n');
        w.write_all(&text).await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn kind(r: &Response) -> Option<ErrorKind> {
        match r {
            Response::Error(e) => Some(e.kind),
            _ => None,
        }
    }

    fn status(r: Response) -> StatusReport {
        match r {
            Response::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unlock_and_authenticated_status_over_the_wire() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(run(l, app.clone()));
        let key = ControlKey::from_code(&fx.code);
        let unlock = |code: &str| Op::Unlock {
            code: SecretText::new(code.to_string()),
        };

        // Locked: status says so (and nothing more) without any key.
        let s = status(exchange(addr, Op::Status, None).await);
        assert_eq!(s.state, State::Locked);
        assert!(s.store.is_none());
        let r = exchange(addr, Op::TestSeal, Some(&key)).await;
        assert_eq!(kind(&r), Some(ErrorKind::Locked));

        let r = exchange(addr, unlock("not-a-code"), None).await;
        assert_eq!(kind(&r), Some(ErrorKind::BadRequest));
        let wrong = UnlockCode::generate();
        let r = exchange(addr, unlock(wrong.expose()), None).await;
        assert_eq!(kind(&r), Some(ErrorKind::WrongCode), "{r:?}");
        assert_eq!(app.state(), State::Locked);

        let spelled = fx.code.expose().to_lowercase().replace('-', " ");
        match exchange(addr, unlock(&spelled), None).await {
            Response::Unlocked(u) => {
                assert!(!u.already_unlocked);
                assert_eq!(u.state, State::Unlocked);
            }
            other => panic!("{other:?}"),
        }

        // Unlocked: status needs a MAC made with the code's key for this connection.
        let r = exchange(addr, Op::Status, None).await;
        assert_eq!(kind(&r), Some(ErrorKind::Unauthenticated));
        let r = exchange(addr, Op::Status, Some(&ControlKey::from_code(&wrong))).await;
        assert_eq!(kind(&r), Some(ErrorKind::Unauthenticated));
        let s = status(exchange(addr, Op::Status, Some(&key)).await);
        assert_eq!(s.state, State::Unlocked);
        assert_eq!(s.store.unwrap().job_id, "job-unit");

        let s = status(exchange(addr, Op::TestSeal, Some(&key)).await);
        assert_eq!(s.state, State::Sealed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replayed_macs_and_garbage_are_refused() {
        let fx = Fixture::new(64 << 20);
        let app = fx.unlocked();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(run(l, app));
        let key = ControlKey::from_code(&fx.code);
        // A MAC recorded for one challenge does not work on another connection.
        let old = control_api::new_challenge();
        let replay = Request {
            op: Op::Status,
            mac: Some(hex::encode(key.mac(&old, &Op::Status))),
        };
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let mut text = serde_json::to_vec(&replay).unwrap();
        text.push(b'\n');
        w.write_all(&text).await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(kind(&resp), Some(ErrorKind::Unauthenticated));

        let s = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        line.clear();
        r.read_line(&mut line).await.unwrap();
        w.write_all(b"{\"op\":{\"type\":\"format-disk\"}}\n")
            .await
            .unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(kind(&resp), Some(ErrorKind::BadRequest));
    }
}
