//! The JSON routes under `/api/v1` (documented in `docs/control-api.md`). Every answer is
//! JSON; every failure is `{"error": {"kind", "message"}}` with the HTTP status of its kind.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use odt_store::crypto::keys::UnlockCode;
use odt_store::trip::control_api::{
    self as control, ChallengeReply, ErrorBody, ErrorKind, ErrorReply, SignInRequest, State,
    UnlockReply, UnlockRequest,
};
use serde::Serialize;

use super::sessions::{CHALLENGE_TTL, Session};
use super::{Ctx, Peer, ship};
use crate::state::StateError;

/// Time a client has to send a request body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);

/// An error answer.
pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    json(
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &ErrorBody {
            error: ErrorReply {
                kind,
                message: message.into(),
            },
        },
    )
}

/// A JSON answer, never cached.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let text = serde_json::to_vec(body).expect("answers serialise");
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// Reads a request body of at most [`control::MAX_BODY`] bytes within [`BODY_TIMEOUT`].
pub async fn read_body(body: Body) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, control::MAX_BODY)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(error(
            ErrorKind::BadRequest,
            format!(
                "the request body is longer than {} bytes or was cut off",
                control::MAX_BODY
            ),
        )),
        Err(_) => Err(error(
            ErrorKind::BadRequest,
            format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
        )),
    }
}

/// Reads and decodes a JSON request body (see [`read_body`]).
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response> {
    let b = read_body(body).await?;
    control::decode_json(&b).map_err(|e| error(ErrorKind::BadRequest, e))
}

/// The bearer token of a request (`Authorization: Bearer T`), or with `cookie` also the
/// page's session cookie.
pub fn token_of(headers: &HeaderMap, cookie: bool) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    if !cookie {
        return None;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == control::COOKIE).then(|| v.to_string())
        })
}

/// The session of a request, if it has a live one.
pub fn session_of(ctx: &Ctx, headers: &HeaderMap, cookie: bool) -> Option<(String, Session)> {
    let t = token_of(headers, cookie)?;
    let s = ctx.sessions.check(&t)?;
    Some((t, s))
}

pub(super) fn not_signed_in(what: &str) -> Response {
    error(
        ErrorKind::Unauthenticated,
        format!(
            "{what} needs a session: run `odt unlock` (or sign in with POST {}/session) and \
             send `Authorization: Bearer TOKEN`; sessions end at the seal, at a restart and \
             after 2 hours unused",
            control::API
        ),
    )
}

/// The JSON routes.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/challenge", get(challenge))
        .route("/api/v1/unlock", post(unlock))
        .route("/api/v1/session", post(sign_in).delete(sign_out))
        .route("/api/v1/bundles", get(bundles))
        .route("/api/v1/seal", post(ship::seal))
        .route("/api/v1/bom", get(ship::bill_of_materials))
        .route("/api/v1/test-seal", post(ship::test_seal))
}

async fn status(AxState(ctx): AxState<Arc<Ctx>>, headers: HeaderMap) -> Response {
    let signed_in = session_of(&ctx, &headers, true).is_some();
    let app = ctx.app.clone();
    match tokio::task::spawn_blocking(move || app.status(signed_in)).await {
        Ok(s) => json(StatusCode::OK, &s),
        Err(e) => error(ErrorKind::Failed, format!("the status task failed: {e}")),
    }
}

async fn challenge(AxState(ctx): AxState<Arc<Ctx>>) -> Response {
    let c = ctx.sessions.challenge();
    json(
        StatusCode::OK,
        &ChallengeReply {
            challenge: hex::encode(c),
            expires_in_secs: CHALLENGE_TTL.as_secs(),
        },
    )
}

/// Unlocks with `code` (blocks in a worker: scrypt, journal replay) and logs the attempt.
/// Shared by the API and the page's sign-in form.
pub async fn unlock_with(ctx: &Arc<Ctx>, peer: Peer, code: &str) -> Result<Response, Response> {
    let code = match UnlockCode::from_str(code) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("control: malformed unlock code from {}", peer.0);
            ctx.note_attempt(peer, false).await;
            return Err(error(ErrorKind::BadRequest, e.to_string()));
        }
    };
    let a = ctx.app.clone();
    let r = tokio::task::spawn_blocking(move || a.unlock(&code)).await;
    match r {
        Ok(Ok(report)) => {
            if !report.already_unlocked {
                ctx.journal_pending().await;
            }
            ctx.note_attempt(peer, true).await;
            if report.already_unlocked {
                tracing::info!(
                    "control: unlock from {}: already unlocked (code checked)",
                    peer.0
                );
            } else {
                let st = ctx.app.store().map(|s| s.stats()).unwrap_or_default();
                tracing::info!(
                    "control: unlocked by {}: job {} ({}), {} files, {} bytes stored; the \
                     export is now {}",
                    peer.0,
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
            let session = ctx.sessions.create(peer.0.ip());
            Ok(json(StatusCode::OK, &UnlockReply { report, session }))
        }
        Ok(Err(e @ StateError::WrongCode { .. })) => {
            tracing::warn!("control: wrong unlock code from {}", peer.0);
            ctx.note_attempt(peer, false).await;
            Err(error(ErrorKind::WrongCode, e.to_string()))
        }
        Ok(Err(e)) => {
            tracing::error!("control: unlock from {} failed: {e}", peer.0);
            Err(error(ErrorKind::Failed, e.to_string()))
        }
        Err(e) => Err(error(
            ErrorKind::Failed,
            format!("the unlock task failed: {e}"),
        )),
    }
}

async fn unlock(
    AxState(ctx): AxState<Arc<Ctx>>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Response {
    let req: UnlockRequest = match json_body(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    unlock_with(&ctx, peer, req.code.expose())
        .await
        .unwrap_or_else(|r| r)
}

/// Checks a sign-in (code, or challenge and MAC) in a worker: a wrong one pauses.
pub async fn check_sign_in(ctx: &Arc<Ctx>, peer: Peer, req: SignInRequest) -> Result<(), Response> {
    if ctx.app.state() == State::Locked {
        return Err(error(
            ErrorKind::Locked,
            "the appliance is locked: unlock it (POST /api/v1/unlock, `odt unlock`, or the \
             sign-in form of the page), which also signs in",
        ));
    }
    let app = ctx.app.clone();
    let ok = match (req.code, req.challenge, req.mac) {
        (Some(code), _, _) => {
            let code = UnlockCode::from_str(code.expose())
                .map_err(|e| error(ErrorKind::BadRequest, e.to_string()))?;
            tokio::task::spawn_blocking(move || app.check_code(&code))
                .await
                .unwrap_or(false)
        }
        (None, Some(c), Some(mac)) => {
            let Some(c) = control::parse_challenge(&c) else {
                return Err(error(
                    ErrorKind::BadRequest,
                    "the challenge is not 64 hex digits",
                ));
            };
            if !ctx.sessions.take_challenge(&c) {
                return Err(error(
                    ErrorKind::Unauthenticated,
                    format!(
                        "unknown, used or expired challenge: get a new one (GET {}/challenge, \
                         valid {} s, once)",
                        control::API,
                        CHALLENGE_TTL.as_secs()
                    ),
                ));
            }
            tokio::task::spawn_blocking(move || app.verify_sign_in(&c, &mac))
                .await
                .unwrap_or(false)
        }
        _ => {
            return Err(error(
                ErrorKind::BadRequest,
                "sign in with {\"code\": CODE} or {\"challenge\": HEX, \"mac\": HEX}",
            ));
        }
    };
    ctx.note_attempt(peer, ok).await;
    if ok {
        Ok(())
    } else {
        tracing::warn!("control: wrong code in a sign-in from {}", peer.0);
        Err(error(
            ErrorKind::WrongCode,
            "the unlock code is not this appliance's: check it against the unlock sheet",
        ))
    }
}

async fn sign_in(
    AxState(ctx): AxState<Arc<Ctx>>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Response {
    let req: SignInRequest = match json_body(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match check_sign_in(&ctx, peer, req).await {
        Ok(()) => json(StatusCode::OK, &ctx.sessions.create(peer.0.ip())),
        Err(r) => r,
    }
}

async fn sign_out(AxState(ctx): AxState<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if let Some(t) = token_of(&headers, false) {
        ctx.sessions.end(&t);
    }
    json(StatusCode::OK, &serde_json::json!({"signed_out": true}))
}

async fn bundles(AxState(ctx): AxState<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if session_of(&ctx, &headers, true).is_none() {
        return not_signed_in("the bundle check");
    }
    let app = ctx.app.clone();
    match tokio::task::spawn_blocking(move || app.bundles()).await {
        Ok(Ok(r)) => json(StatusCode::OK, &r),
        Ok(Err(e @ StateError::Locked)) => error(ErrorKind::Locked, e.to_string()),
        Ok(Err(e)) => error(ErrorKind::Failed, e.to_string()),
        Err(e) => error(ErrorKind::Failed, format!("the bundle check failed: {e}")),
    }
}

/// Answer to any other path.
pub async fn not_found() -> Response {
    error(
        ErrorKind::NotFound,
        format!(
            "no such route; the API is under {} (see docs/control-api.md)",
            control::API
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;
    use axum::http::{Method, Request};
    use odt_store::trip::control_api::{ControlKey, SessionReply, StatusReport};
    use tower::ServiceExt;

    struct Call {
        status: u16,
        body: Vec<u8>,
    }

    impl Call {
        fn json<T: serde::de::DeserializeOwned>(&self) -> T {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
        }

        fn kind(&self) -> ErrorKind {
            self.json::<ErrorBody>().error.kind
        }
    }

    async fn call(
        ctx: &Arc<Ctx>,
        method: Method,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Call {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(body.to_string())).unwrap();
        req.extensions_mut()
            .insert(Peer("192.0.2.7:5000".parse().unwrap()));
        let r = super::super::router(ctx.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Call { status, body }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unlock_sessions_and_the_seal() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        let ctx = Arc::new(Ctx::new(app.clone(), "127.0.0.1:2049".parse().unwrap()));
        let code = fx.code.expose().to_string();

        // Locked: public status only, and nothing else without a session.
        let r = call(&ctx, Method::GET, "/api/v1/status", "", None).await;
        assert_eq!(r.status, 200);
        let s: StatusReport = r.json();
        assert_eq!((s.state, s.store.is_none()), (State::Locked, true));
        assert_eq!(s.fingerprint, app.tls().fingerprint());
        let r = call(&ctx, Method::GET, "/api/v1/bundles", "", None).await;
        assert_eq!((r.status, r.kind()), (401, ErrorKind::Unauthenticated));
        let r = call(
            &ctx,
            Method::POST,
            "/api/v1/session",
            &format!("{{\"code\":\"{code}\"}}"),
            None,
        )
        .await;
        assert_eq!(
            r.kind(),
            ErrorKind::Locked,
            "sign-in needs an unlocked appliance"
        );

        // Wrong and malformed codes; garbage bodies.
        let wrong = UnlockCode::generate();
        let r = call(
            &ctx,
            Method::POST,
            "/api/v1/unlock",
            &format!("{{\"code\":\"{}\"}}", wrong.expose()),
            None,
        )
        .await;
        assert_eq!((r.status, r.kind()), (403, ErrorKind::WrongCode));
        let r = call(
            &ctx,
            Method::POST,
            "/api/v1/unlock",
            "{\"code\":\"nope\"}",
            None,
        )
        .await;
        assert_eq!(r.kind(), ErrorKind::BadRequest);
        let r = call(&ctx, Method::POST, "/api/v1/unlock", "{\"op\":1", None).await;
        assert_eq!(r.kind(), ErrorKind::BadRequest);
        let r = call(&ctx, Method::GET, "/format-disk", "", None).await;
        assert_eq!((r.status, r.kind()), (404, ErrorKind::NotFound));
        let (log, pending) = ctx.custody();
        assert!(log.events.is_empty(), "locked: nothing journaled yet");
        assert_eq!(pending.len(), 2);

        // Unlock: a session comes with it.
        let r = call(
            &ctx,
            Method::POST,
            "/api/v1/unlock",
            &format!("{{\"code\":\"{code}\"}}"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let u: UnlockReply = r.json();
        assert_eq!(u.report.state, State::Unlocked);
        let t1 = u.session.token.expose().to_string();
        let s: StatusReport = call(&ctx, Method::GET, "/api/v1/status", "", Some(&t1))
            .await
            .json();
        assert!(s.signed_in && s.store.is_some());
        let s: StatusReport = call(&ctx, Method::GET, "/api/v1/status", "", None)
            .await
            .json();
        assert!(
            !s.signed_in && s.store.is_none(),
            "public fields only without a session"
        );
        let r = call(&ctx, Method::GET, "/api/v1/status", "", Some("forged")).await;
        assert!(!r.json::<StatusReport>().signed_in);

        // Sign-in by challenge and MAC (the code never sent); a used challenge is refused.
        let c: ChallengeReply = call(&ctx, Method::GET, "/api/v1/challenge", "", None)
            .await
            .json();
        let ch = control::parse_challenge(&c.challenge).unwrap();
        let mac = hex::encode(ControlKey::from_code(&fx.code).sign_in_mac(&ch));
        let body = format!("{{\"challenge\":\"{}\",\"mac\":\"{mac}\"}}", c.challenge);
        let r = call(&ctx, Method::POST, "/api/v1/session", &body, None).await;
        assert_eq!(r.status, 200);
        let t2 = r.json::<SessionReply>().token.expose().to_string();
        let r = call(&ctx, Method::POST, "/api/v1/session", &body, None).await;
        assert_eq!(
            r.kind(),
            ErrorKind::Unauthenticated,
            "a challenge is single-use"
        );
        let c: ChallengeReply = call(&ctx, Method::GET, "/api/v1/challenge", "", None)
            .await
            .json();
        let ch = control::parse_challenge(&c.challenge).unwrap();
        let bad = hex::encode(ControlKey::from_code(&wrong).sign_in_mac(&ch));
        let body = format!("{{\"challenge\":\"{}\",\"mac\":\"{bad}\"}}", c.challenge);
        let r = call(&ctx, Method::POST, "/api/v1/session", &body, None).await;
        assert_eq!(r.kind(), ErrorKind::WrongCode);

        // The BOM waits for the seal; the seal ends every other session.
        let r = call(&ctx, Method::GET, "/api/v1/bom", "", Some(&t1)).await;
        assert_eq!(r.kind(), ErrorKind::NotSealed);
        let r = call(&ctx, Method::POST, "/api/v1/seal", "", Some(&t1)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let sealed: odt_store::trip::control_api::SealReply = r.json();
        let (log, pending) = ctx.custody();
        let whats: Vec<_> = log.events.iter().map(|e| e.what).collect();
        use odt_store::trip::custody::What;
        assert_eq!(
            whats,
            [
                What::Started,
                What::WrongCode,
                What::WrongCode,
                What::CodeAccepted,
                What::CodeAccepted,
                What::WrongCode,
                What::SealRequested
            ],
            "journaled in order, the locked appliance's events at the unlock"
        );
        assert_eq!(log.events[1].from, "192.0.2.7");
        assert!(pending.is_empty());
        let s: StatusReport = call(&ctx, Method::GET, "/api/v1/status", "", None)
            .await
            .json();
        assert_eq!(
            s.seal.unwrap().seal_code,
            sealed.seal_code,
            "the seal code is public"
        );
        let r = call(&ctx, Method::GET, "/api/v1/bundles", "", Some(&t2)).await;
        assert_eq!(
            r.kind(),
            ErrorKind::Unauthenticated,
            "the seal ended the other session"
        );
        let r = call(&ctx, Method::GET, "/api/v1/bom?format=csv", "", Some(&t1)).await;
        assert_eq!(r.status, 200);
        assert!(
            String::from_utf8_lossy(&r.body)
                .starts_with(&format!("{}\n", odt_store::trip::bom::CSV_HEADER))
        );
    }
}
