//! Shipping: the seal (bundle check first, every other session ended after it), the bill
//! of materials the seal covers, and the test hook that only turns the export read-only.
//! Shared by the API routes and the page.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use odt_store::trip::bom;
use odt_store::trip::control_api::{ErrorKind, SealRefused, SealReply, SealRequest, State};

use super::api::{error, json, json_body, not_signed_in, session_of};
use super::sessions::AFTER_SEAL;
use super::{Ctx, Peer};
use crate::state::StateError;

/// Lets writes that clients were already told about reach the store before a seal.
async fn settle_writes(ctx: &Ctx) {
    let wait = Duration::from_secs(60);
    if tokio::time::timeout(wait, ctx.app.pending().drain())
        .await
        .is_err()
    {
        tracing::warn!(
            "writes still running after {wait:?}: sealing without them (their clients see ROFS at COMMIT)"
        );
    }
}

/// What a seal request came to.
pub enum SealResult {
    /// Sealed.
    Sealed(SealReply),
    /// Not sealed: a bundle has errors.
    Refused(SealRefused),
}

/// Seals (bundle check first) and ends every session but `token`'s. Shared by the API and
/// the page.
pub async fn seal_with(
    ctx: &Arc<Ctx>,
    peer: Peer,
    token: &str,
    force: bool,
) -> Result<SealResult, Response> {
    if ctx.app.state() == State::Locked {
        return Err(error(ErrorKind::Locked, StateError::Locked.to_string()));
    }
    ctx.note(odt_store::trip::custody::What::SealRequested, Some(peer))
        .await;
    settle_writes(ctx).await;
    let a = ctx.app.clone();
    let out = match tokio::task::spawn_blocking(move || a.seal(force)).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::error!("control: seal from {} failed: {e}", peer.0);
            return Err(error(ErrorKind::Failed, e.to_string()));
        }
        Err(e) => {
            return Err(error(
                ErrorKind::Failed,
                format!("the seal task failed: {e}"),
            ));
        }
    };
    match out.sealed {
        Some(sealed) => {
            let rec = &sealed.seal.record;
            tracing::info!(
                "control: SEALED by {}: code {}, {} files, {} bytes, {} bundle(s); the export \
                 is now read-only",
                peer.0,
                sealed.code,
                rec.files,
                rec.bytes,
                out.bundles.bundles.len()
            );
            ctx.sessions.end_all_except(Some(token), AFTER_SEAL);
            Ok(SealResult::Sealed(SealReply {
                seal_code: sealed.code.clone(),
                job_id: rec.job_id.clone(),
                files: rec.files,
                dirs: rec.dirs,
                bytes: rec.bytes,
                sealed_unix: rec.sealed.secs,
                bundles: out.bundles,
            }))
        }
        None => {
            let reason = out.refused.unwrap_or_else(|| "bundles have errors".into());
            tracing::warn!("control: seal refused for {}: {reason}", peer.0);
            Ok(SealResult::Refused(SealRefused {
                sealed: false,
                reason,
                bundles: out.bundles,
            }))
        }
    }
}

/// `POST /api/v1/seal` (bearer token only).
pub async fn seal(
    AxState(ctx): AxState<Arc<Ctx>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Bearer only: a cookie would let another site's form post here (the page has its own
    // form route with a CSRF token).
    let Some((token, _)) = session_of(&ctx, &headers, false) else {
        return not_signed_in("the seal");
    };
    let req: SealRequest = match json_body(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match seal_with(&ctx, peer, &token, req.force).await {
        Ok(SealResult::Sealed(r)) => json(StatusCode::OK, &r),
        Ok(SealResult::Refused(r)) => json(StatusCode::CONFLICT, &r),
        Err(r) => r,
    }
}

/// `?format=csv|json`.
#[derive(serde::Deserialize)]
pub struct BomQuery {
    #[serde(default)]
    format: Option<String>,
}

/// The bill of materials as a download (`csv` or `json`). Shared with the page.
pub async fn bom_download(ctx: &Arc<Ctx>, format: &str) -> Response {
    let Some(store) = ctx.app.store().cloned() else {
        return error(ErrorKind::Locked, StateError::Locked.to_string());
    };
    let Some(seal) = ctx.app.seal_info() else {
        return error(
            ErrorKind::NotSealed,
            "the bill of materials is what the seal covers: seal first (`odt seal` or \
             Prepare to ship)",
        );
    };
    if !matches!(format, "csv" | "json") {
        return error(ErrorKind::BadRequest, "format must be csv or json");
    }
    let entries = match tokio::task::spawn_blocking(move || bom::entries(&store)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            return error(
                ErrorKind::Failed,
                format!("building the bill of materials failed: {e}"),
            );
        }
        Err(e) => return error(ErrorKind::Failed, format!("the BOM task failed: {e}")),
    };
    let name = format!("bom-{}-{}.{format}", ctx.app.info().job_id, seal.seal_code);
    let (ctype, body) = if format == "csv" {
        ("text/csv; charset=utf-8", bom::csv(&entries).into_bytes())
    } else {
        let b = bom::Bom {
            job_id: ctx.app.info().job_id.clone(),
            seal_code: Some(seal.seal_code),
            entries,
        };
        (
            "application/json",
            serde_json::to_vec_pretty(&b).expect("the BOM serialises"),
        )
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/bom?format=csv|json`.
pub async fn bill_of_materials(
    AxState(ctx): AxState<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Query<BomQuery>,
) -> Response {
    if session_of(&ctx, &headers, true).is_none() {
        return not_signed_in("the bill of materials");
    }
    bom_download(&ctx, q.format.as_deref().unwrap_or("json")).await
}

/// `POST /api/v1/test-seal`: the test hook (export read-only, no seal record).
pub async fn test_seal(
    AxState(ctx): AxState<Arc<Ctx>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    if session_of(&ctx, &headers, false).is_none() {
        return not_signed_in("test-seal");
    }
    settle_writes(&ctx).await;
    match ctx.app.test_seal() {
        Ok(()) => {
            tracing::warn!(
                "control: TEST HOOK: export set read-only by {} (no seal record written)",
                peer.0
            );
            json(StatusCode::OK, &ctx.app.status(true))
        }
        Err(e @ StateError::Locked) => error(ErrorKind::Locked, e.to_string()),
        Err(e) => error(ErrorKind::BadRequest, e.to_string()),
    }
}
