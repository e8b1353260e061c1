//! The appliance's web page at `/`: server-rendered HTML, one small script (`/page.js`,
//! refreshes the numbers every 5 s) and one style sheet, all served from here (no internet
//! needed, nothing from elsewhere: the Content-Security-Policy forbids it).
//!
//! Before sign-in the page shows the state, the certificate fingerprint and the seal code
//! once sealed. Signing in with the unlock code (which also unlocks a locked appliance)
//! sets a session cookie (HttpOnly, Secure, SameSite=Strict); forms that change something
//! also carry the session's CSRF token and are refused when the browser says they come
//! from another site.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use odt_store::trip::bundle::{BundleReport, Severity};
use odt_store::trip::control_api::{self as control, SignInRequest, State, StatusReport};
use odt_store::trip::custody::What;
use odt_store::units::{bytes, utc};

use super::api;
use super::ship::{self, SealResult};
use super::{Ctx, Peer};

const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Security headers of every page answer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/", get(index))
        .route(
            "/page.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route("/page.css", get(|| async { asset("text/css", STYLE) }))
        .route("/seal.svg", get(seal_qr))
        .route("/sign-in", post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/seal", post(seal))
        .route("/bom.csv", get(|s, h| bom(s, h, "csv")))
        .route("/bom.json", get(|s, h| bom(s, h, "json")))
}

fn asset(ctype: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `part` of `whole` as a percentage rounded down, as page.js shows it (`-` of nothing).
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{} %", part as u128 * 100 / whole as u128)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // not no-referrer: with it, browsers send `Origin: null` on form posts.
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

fn see_other(cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn session_cookie(token: &str) -> String {
    format!(
        "{}={token}; Path=/; HttpOnly; Secure; SameSite=Strict",
        control::COOKIE
    )
}

/// True if the browser says the form comes from this page (or says nothing, as curl).
fn same_origin(headers: &HeaderMap) -> bool {
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| matches!(v, "same-origin" | "none"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_ok = match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        host,
    ) {
        (None, _) => true,
        (Some(o), Some(h)) => o == format!("https://{h}"),
        (Some(_), None) => false,
    };
    site_ok && origin_ok
}

/// Host to put in the mount commands: the export's address, or the name the browser used
/// when the export listens on every address.
fn nfs_host(ctx: &Ctx, headers: &HeaderMap) -> String {
    if !ctx.nfs.ip().is_unspecified() {
        return ctx.nfs.ip().to_string();
    }
    let h = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("APPLIANCE");
    // Strip the port: "[v6]:p", "name:p" or "v4:p".
    match h.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host.to_string(),
        _ => h.to_string(),
    }
}

struct View<'a> {
    status: &'a StatusReport,
    csrf: Option<&'a str>,
    bundles: Option<&'a BundleReport>,
    error: Option<&'a str>,
}

fn render(ctx: &Ctx, headers: &HeaderMap, v: &View) -> String {
    let s = v.status;
    let mut o = String::new();
    let title = format!("ODT appliance {}", ctx.app.info().job_id);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"/page.css\">\
         <script src=\"/page.js\" defer></script></head>\
         <body data-state=\"{st}\" data-signed-in=\"{si}\"><header><h1>{t}</h1>\
         <p class=\"state state-{st}\">State: <strong id=\"state\">{st}</strong></p></header><main>",
        t = esc(&title),
        st = s.state,
        si = v.csrf.is_some()
    );
    if let Some(e) = v.error {
        let _ = write!(
            o,
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
            esc(e)
        );
    }
    if let Some(seal) = &s.seal {
        let _ = write!(
            o,
            "<section id=\"sealed\"><h2>Sealed</h2><p>Seal code: <strong id=\"seal-code\">{c}</strong></p>\
             <p>Sealed {when}: {files} files, {b}.</p>\
             <img id=\"seal-qr\" src=\"/seal.svg\" alt=\"QR code of the seal code {c}\" width=\"180\" height=\"180\">\
             <p>Write the seal code on the label and send it to the provider: the dock checks it with \
             <code>odt seal-check --expect</code>.</p></section>",
            c = esc(&seal.seal_code),
            when = utc(seal.sealed_unix),
            files = seal.files,
            b = bytes(seal.bytes)
        );
    }
    let Some(csrf) = v.csrf else {
        let action = if s.state == State::Locked {
            "Unlock"
        } else {
            "Sign in"
        };
        let _ = write!(
            o,
            "<section id=\"sign-in\"><h2>{action}</h2>\
             <form method=\"post\" action=\"/sign-in\"><label for=\"code\">Unlock code</label> \
             <input id=\"code\" name=\"code\" type=\"password\" autocomplete=\"off\" required \
             placeholder=\"XXXXX-XXXXX-...\"> <button id=\"sign-in-button\" type=\"submit\">{action}</button></form>\
             <p>The unlock code is on the unlock sheet from your provider. {what}</p></section>",
            what = if s.state == State::Locked {
                "Unlocking opens the NFS share for writing."
            } else {
                "Signing in shows capacity, contents and the seal."
            }
        );
        footer(&mut o, s);
        return o;
    };
    if let Some(st) = &s.store {
        let used = st.capacity_bytes.saturating_sub(st.free_bytes);
        let gain = if st.stored_bytes > 0 {
            format!("{:.2}x", st.logical_bytes as f64 / st.stored_bytes as f64)
        } else {
            "-".into()
        };
        let _ = write!(
            o,
            "<section id=\"dashboard\"><h2>Dashboard</h2><table>\
             <tr><th>Job</th><td>{job} ({name}), device set {set}, {devs} device(s)</td></tr>\
             <tr><th>Capacity</th><td><span id=\"used\">{used}</span> used, <span id=\"free\">{free}</span> free of {cap}; \
             <span id=\"dead\">{dead}</span> of the used space is held by deleted or overwritten data until cleaned (within seconds while no client writes; in the segment being written, once it is full)</td></tr>\
             <tr><th>Journal</th><td><span id=\"journal-used\">{journal_used}</span> of <span id=\"journal-size\">{journal}</span> \
             used (<span id=\"journal-pct\">{journal_pct}</span>); when it is full the share refuses every change (no space), whatever the free capacity</td></tr>\
             <tr><th>Files</th><td><span id=\"files\">{files}</span> files, {dirs} directories, {links} symlinks</td></tr>\
             <tr><th>Stored</th><td><span id=\"logical\">{logical}</span> of files in <span id=\"on-device\">{stored}</span> on the devices (compression gain <span id=\"gain\">{gain}</span>)</td></tr>\
             <tr><th>Write rate</th><td><span id=\"rate\">{rate}/s</span> now, {written} since start</td></tr>\
             </table>",
            job = esc(&st.job_id),
            name = esc(&st.job_name),
            set = esc(&st.set_id),
            devs = st.devices,
            used = bytes(used),
            free = bytes(st.free_bytes),
            cap = bytes(st.capacity_bytes),
            dead = bytes(st.dead_bytes),
            journal_used = bytes(st.journal_used_bytes),
            journal = bytes(st.journal_bytes),
            journal_pct = percent(st.journal_used_bytes, st.journal_bytes),
            files = st.files,
            dirs = st.dirs,
            links = st.symlinks,
            logical = bytes(st.logical_bytes),
            stored = bytes(st.stored_bytes),
            rate = bytes(st.write_rate_bytes_per_sec),
            written = bytes(st.written_bytes)
        );
        let host = esc(&nfs_host(ctx, headers));
        let port = ctx.nfs.port();
        let _ = write!(
            o,
            "<h3>Mount the share</h3><p>Linux:</p><pre id=\"mount-linux\">mkdir -p /mnt/odt\n\
             mount -t nfs -o vers=3,proto=tcp,nolock,port={port},mountport={port},mountproto=tcp {host}:/ /mnt/odt</pre>\
             <p>ESXi:</p><pre id=\"mount-esxi\">esxcli storage nfs add --host={host} --share=/ --volume-name=odt-{job}</pre>{esxi_note}</section>",
            job = esc(&ctx.app.info().job_id),
            esxi_note = if port == 2049 {
                String::new()
            } else {
                format!(
                    "<p class=\"note\">ESXi mounts NFS on port 2049 only; this appliance serves it on port {port}: \
                     restart it with <code>--listen ADDR:2049</code> for ESXi.</p>"
                )
            }
        );
    }
    if let Some(b) = v.bundles {
        bundles_section(&mut o, b);
    }
    if s.state == State::Unlocked {
        let _ = write!(
            o,
            "<section id=\"ship\"><h2>Prepare to ship</h2><p>Sealing checks every VM bundle, \
             makes the share read-only for good and signs what it holds. Copy everything first.</p>\
             <form method=\"post\" action=\"/seal\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label><input id=\"confirm\" type=\"checkbox\" name=\"confirm\" value=\"yes\" required> \
             I have copied everything: seal the appliance now</label> \
             <button id=\"seal-button\" type=\"submit\">Seal</button></form></section>"
        );
    }
    if s.state == State::Sealed {
        o.push_str(
            "<section id=\"bom\"><h2>Bill of materials</h2><p>Every file with its size and \
             BLAKE3 (equal to <code>b3sum</code>), as sealed: \
             <a id=\"bom-csv\" href=\"/bom.csv\" download>CSV</a> \
             <a id=\"bom-json\" href=\"/bom.json\" download>JSON</a></p></section>",
        );
    }
    custody_section(&mut o, ctx);
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/sign-out\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Sign out</button></form>"
    );
    footer(&mut o, s);
    o
}

fn bundles_section(o: &mut String, r: &BundleReport) {
    o.push_str("<section id=\"bundles\"><h2>VM bundles</h2>");
    if r.bundles.is_empty() {
        o.push_str("<p>No VM bundles (.ovf or .ova) found yet.</p>");
    } else {
        o.push_str(
            "<table><tr><th>Bundle</th><th>Check</th><th>Files</th><th>Size</th><th>Digests checked</th></tr>",
        );
        for b in &r.bundles {
            let verdict = if !b.ok() {
                "errors"
            } else if b.findings.is_empty() {
                "complete"
            } else {
                "complete, with warnings"
            };
            let _ = write!(
                o,
                "<tr class=\"bundle\"><td>{}</td><td class=\"{}\">{verdict}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.path),
                if b.ok() { "ok" } else { "bad" },
                b.files.len(),
                bytes(b.bytes),
                b.digests_checked
            );
            for f in &b.findings {
                let _ = write!(
                    o,
                    "<tr class=\"finding\"><td></td><td colspan=\"4\">{}: {}</td></tr>",
                    match f.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    },
                    esc(&f.message)
                );
            }
        }
        o.push_str("</table>");
    }
    if r.loose_files > 0 {
        let _ = write!(o, "<p>{} file(s) outside any bundle.</p>", r.loose_files);
    }
    o.push_str("</section>");
}

fn custody_section(o: &mut String, ctx: &Ctx) {
    let (log, later) = ctx.custody();
    let wrong = log.wrong_codes() + later.iter().filter(|e| e.what == What::WrongCode).count();
    let _ = write!(
        o,
        "<section id=\"custody\"><h2>Custody log</h2><p id=\"wrong-codes\">{wrong} wrong unlock code attempt(s) recorded.</p>\
         <table><tr><th>Time</th><th>Event</th><th>From</th><th></th></tr>"
    );
    let rows = log
        .events
        .iter()
        .map(|e| (e, "journaled"))
        .chain(later.iter().map(|e| (e, "not journaled")));
    for (e, how) in rows.collect::<Vec<_>>().into_iter().rev() {
        let _ = write!(
            o,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{how}</td></tr>",
            if e.what == What::WrongCode {
                "bad"
            } else {
                "ok"
            },
            utc(e.time.secs),
            e.what.describe(),
            esc(&e.from)
        );
    }
    o.push_str("</table>");
    if log.omitted > 0 {
        let _ = write!(
            o,
            "<p>{} later event(s) not listed (the log keeps {}).</p>",
            log.omitted,
            odt_store::trip::custody::MAX_EVENTS
        );
    }
    o.push_str("</section>");
}

fn footer(o: &mut String, s: &StatusReport) {
    let _ = write!(
        o,
        "</main><footer><p>Certificate SHA-256 fingerprint: <code id=\"fingerprint\">{}</code> \
         (compare it with the unlock sheet)</p></footer></body></html>",
        s.fingerprint
    );
}

/// Renders the page for this request (bundle check included when signed in and unlocked).
async fn page(
    ctx: &Arc<Ctx>,
    headers: &HeaderMap,
    code: StatusCode,
    error: Option<&str>,
) -> Response {
    let session = api::session_of(ctx, headers, true);
    let signed_in = session.is_some();
    let app = ctx.app.clone();
    let (status, bundles) = tokio::task::spawn_blocking(move || {
        let st = app.status(signed_in);
        let b = if signed_in && st.state != State::Locked {
            app.bundles().ok()
        } else {
            None
        };
        (st, b)
    })
    .await
    .unwrap_or_else(|e| panic!("the page's status task failed: {e}"));
    let view = View {
        status: &status,
        csrf: session.as_ref().map(|(_, s)| s.csrf.as_str()),
        bundles: bundles.as_ref(),
        error,
    };
    html(code, render(ctx, headers, &view))
}

async fn index(AxState(ctx): AxState<Arc<Ctx>>, headers: HeaderMap) -> Response {
    page(&ctx, &headers, StatusCode::OK, None).await
}

async fn form_of(body: Body) -> Result<control::Form, Response> {
    let b = api::read_body(body).await?;
    control::decode_form(&b).map_err(|e| api::error(control::ErrorKind::BadRequest, e))
}

async fn sign_in(
    AxState(ctx): AxState<Arc<Ctx>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !same_origin(&headers) {
        return page(
            &ctx,
            &headers,
            StatusCode::FORBIDDEN,
            Some("refused: the form came from another site"),
        )
        .await;
    }
    let form = match form_of(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(code) = form.code else {
        return page(
            &ctx,
            &headers,
            StatusCode::BAD_REQUEST,
            Some("type the unlock code"),
        )
        .await;
    };
    let result = if ctx.app.state() == State::Locked {
        api::unlock_with(&ctx, peer, &code).await.map(|_| ())
    } else {
        let req = SignInRequest {
            code: Some(control::SecretText::new(code.to_string())),
            ..SignInRequest::default()
        };
        api::check_sign_in(&ctx, peer, req).await
    };
    match result {
        Ok(()) => {
            let s = ctx.sessions.create(peer.0.ip());
            see_other(Some(session_cookie(s.token.expose())))
        }
        Err(r) => {
            let (code, msg) = error_text(r).await;
            page(&ctx, &headers, code, Some(&msg)).await
        }
    }
}

/// Status and message of an API error answer, for the page.
async fn error_text(r: Response) -> (StatusCode, String) {
    let code = r.status();
    let body = axum::body::to_bytes(r.into_body(), control::MAX_BODY)
        .await
        .unwrap_or_default();
    let msg = control::decode_json::<control::ErrorBody>(&body)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| format!("failed ({code})"));
    (code, msg)
}

/// The session of a form post whose CSRF token matches, or the page to answer instead.
async fn form_session(
    ctx: &Arc<Ctx>,
    headers: &HeaderMap,
    form: &control::Form,
) -> Result<String, Response> {
    let Some((token, s)) = api::session_of(ctx, headers, true) else {
        return Err(page(
            ctx,
            headers,
            StatusCode::UNAUTHORIZED,
            Some("your session ended: sign in again"),
        )
        .await);
    };
    let csrf_ok = form
        .csrf
        .as_deref()
        .is_some_and(|c| blake3::hash(c.as_bytes()) == blake3::hash(s.csrf.as_bytes()));
    if !same_origin(headers) || !csrf_ok {
        return Err(page(
            ctx,
            headers,
            StatusCode::FORBIDDEN,
            Some("refused: the form is not from this page (reload it)"),
        )
        .await);
    }
    Ok(token)
}

async fn sign_out(AxState(ctx): AxState<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Response {
    let form = match form_of(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match form_session(&ctx, &headers, &form).await {
        Ok(token) => {
            ctx.sessions.end(&token);
            see_other(Some(format!(
                "{}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
                control::COOKIE
            )))
        }
        Err(r) => r,
    }
}

async fn seal(
    AxState(ctx): AxState<Arc<Ctx>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = match form_of(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let token = match form_session(&ctx, &headers, &form).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !form.confirm {
        return page(
            &ctx,
            &headers,
            StatusCode::BAD_REQUEST,
            Some("tick the confirmation box to seal"),
        )
        .await;
    }
    match ship::seal_with(&ctx, peer, &token, false).await {
        Ok(SealResult::Sealed(_)) => see_other(None),
        Ok(SealResult::Refused(r)) => {
            let msg = format!("NOT SEALED: {}", r.reason);
            page(&ctx, &headers, StatusCode::CONFLICT, Some(&msg)).await
        }
        Err(r) => {
            let (code, msg) = error_text(r).await;
            page(&ctx, &headers, code, Some(&msg)).await
        }
    }
}

async fn bom(
    AxState(ctx): AxState<Arc<Ctx>>,
    headers: HeaderMap,
    format: &'static str,
) -> Response {
    if api::session_of(&ctx, &headers, true).is_none() {
        return page(
            &ctx,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("sign in to download the bill of materials"),
        )
        .await;
    }
    ship::bom_download(&ctx, format).await
}

/// The seal code as a QR code (SVG). Public, as the seal code is.
async fn seal_qr(AxState(ctx): AxState<Arc<Ctx>>) -> Response {
    let Some(seal) = ctx.app.seal_info() else {
        return api::error(control::ErrorKind::NotSealed, "not sealed yet");
    };
    match qrcode::QrCode::new(seal.seal_code.as_bytes()) {
        Ok(q) => {
            let svg = q
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(180, 180)
                .build();
            (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                svg,
            )
                .into_response()
        }
        Err(e) => api::error(
            control::ErrorKind::Failed,
            format!("cannot draw the QR code: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn cross_site_forms_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("10.0.0.5:7049"));
        assert!(same_origin(&h), "curl sends neither header");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://10.0.0.5:7049"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
