//! Client of the appliance's control API (HTTPS, messages in [`odt_store::trip::control_api`]): which
//! appliance, which certificate to pin, the unlock code or a saved session, and one call
//! per operation.
//!
//! - [`https`]: one request over TLS with the certificate pinned by its SHA-256.
//! - [`session`]: the session files that spare asking for the code again.
//! - [`error`]: error kinds, `--json` errors and exit codes.

pub mod error;
pub mod https;
pub mod session;

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use hyper::Method;
use odt_store::crypto::keys::UnlockCode;
use odt_store::crypto::tls::{Fingerprint, TlsIdentity};
use odt_store::trip::control_api::{
    self as control, ChallengeReply, ErrorBody, SealRefused, SealReply, SecretText, SessionReply,
    SignInRequest, StatusReport, UnlockReply, UnlockRequest,
};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use self::error::{CtlError, Kind};
use self::https::Https;

/// Which appliance to talk to, which certificate to trust, and where the unlock code comes
/// from: the options every customer-side command shares.
#[derive(Debug, Args)]
pub struct Connect {
    /// Control address of the appliance (host[:port], default port 7049).
    #[arg(long)]
    pub appliance: String,
    /// SHA-256 fingerprint of the appliance's certificate (from the unlock sheet; any of
    /// AB:CD:..., hex, sha256:...). Default: from --job, from the --code-file sheet, or from
    /// the certificate `odt unlock` pinned for this address.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Job directory whose job.toml records the fingerprint (at the provider).
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// Read the customer's unlock code from this file (the sheet `odt provision --code-file`
    /// writes) instead of a saved session or stdin.
    #[arg(long)]
    pub code_file: Option<PathBuf>,
}

/// Adds the default control port to an address that names none (`host` or `[v6]`).
pub fn with_default_port(addr: &str) -> String {
    let a = addr.trim();
    if a.parse::<std::net::SocketAddr>().is_ok() {
        return a.to_string();
    }
    if a.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{a}]:{}", control::DEFAULT_PORT);
    }
    if a.starts_with('[') && a.ends_with(']') {
        return format!("{a}:{}", control::DEFAULT_PORT);
    }
    if a.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        return a.to_string();
    }
    format!("{a}:{}", control::DEFAULT_PORT)
}

/// Comment line of the unlock sheet that carries the fingerprint.
const SHEET_FINGERPRINT: &str = "# appliance certificate SHA-256:";

/// The unlock sheet `odt provision --code-file` writes: comments (job, fingerprint, public
/// key pin) and the code on the one line that is not a comment.
pub fn code_file_text(
    job_id: &str,
    job_name: &str,
    code: &UnlockCode,
    tls: &TlsIdentity,
) -> String {
    format!(
        "# ODT unlock sheet for job {job_id} ({job_name})\n\
         {SHEET_FINGERPRINT} {}\n\
         # public-key pin (curl --pinnedpubkey sha256//PIN): {}\n\
         {}\n",
        tls.fingerprint(),
        tls.spki_pin(),
        code.expose()
    )
}

fn sheet_text(p: &Path) -> Result<Zeroizing<String>, CtlError> {
    std::fs::read_to_string(p).map(Zeroizing::new).map_err(|e| {
        CtlError::new(
            Kind::Usage,
            format!("cannot read the code file {}: {e}", p.display()),
        )
    })
}

/// The code in a sheet or a line typed: the first line that is neither empty nor a comment.
fn parse_code(text: &str, from: Option<&Path>) -> Result<Option<UnlockCode>, CtlError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    match line {
        None => Ok(None),
        Some(c) => UnlockCode::from_str(c).map(Some).map_err(|e| {
            CtlError::new(
                Kind::Usage,
                format!(
                    "{e}{}",
                    from.map(|p| format!(" (in {})", p.display()))
                        .unwrap_or_default()
                ),
            )
        }),
    }
}

/// Reads the unlock code: from `code_file`, else from the terminal without echo, else
/// (with `stdin`) one line of stdin. `None` if there is none.
pub fn read_unlock_code(
    code_file: Option<&Path>,
    stdin: bool,
) -> Result<Option<UnlockCode>, CtlError> {
    if let Some(p) = code_file {
        return parse_code(&sheet_text(p)?, Some(p));
    }
    if std::io::stdin().is_terminal() {
        let typed = rpassword::prompt_password("Unlock code: ").map_err(|e| {
            CtlError::new(
                Kind::Usage,
                format!("cannot read the unlock code from the terminal: {e}"),
            )
        })?;
        return parse_code(&Zeroizing::new(typed), None);
    }
    if !stdin {
        return Ok(None);
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut s).map_err(|e| {
        CtlError::new(
            Kind::Usage,
            format!("reading the unlock code from stdin: {e}"),
        )
    })?;
    parse_code(&s, None)
}

/// A connection to one appliance with its certificate pinned.
pub struct Client {
    https: Https,
    fp: Fingerprint,
    code_file: Option<PathBuf>,
}

fn parse_fingerprint(s: &str, from: &str) -> Result<Fingerprint, CtlError> {
    s.parse()
        .map_err(|e: odt_store::Error| CtlError::new(Kind::Usage, format!("{from}: {e}")))
}

impl Client {
    /// Resolves the address and the fingerprint to pin (see [`Connect::fingerprint`]).
    pub fn connect(c: &Connect) -> Result<Client, CtlError> {
        let addr = with_default_port(&c.appliance);
        let fp = if let Some(f) = &c.fingerprint {
            parse_fingerprint(f, "--fingerprint")?
        } else if let Some(dir) = &c.job {
            let job = odt_store::trip::job::Job::load(dir)
                .map_err(|e| CtlError::new(Kind::Usage, format!("--job {}: {e}", dir.display())))?;
            job.set.and_then(|s| s.tls_fingerprint).ok_or_else(|| {
                CtlError::new(
                    Kind::Usage,
                    format!(
                        "the job in {} records no certificate fingerprint (provisioned by an \
                         older odt?): pass --fingerprint",
                        dir.display()
                    ),
                )
            })?
        } else if let Some(fp) = c
            .code_file
            .as_deref()
            .map(sheet_fingerprint)
            .transpose()?
            .flatten()
        {
            fp
        } else if let Some(fp) = session::pinned_for(&addr) {
            fp
        } else {
            return Err(no_fingerprint(&addr));
        };
        Ok(Client {
            https: Https::new(&addr, fp)?,
            fp,
            code_file: c.code_file.clone(),
        })
    }

    /// The control address.
    pub fn addr(&self) -> &str {
        self.https.addr()
    }

    /// The pinned certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fp
    }

    /// One call; an error answer becomes a [`CtlError`] of its kind. `Ok(Err(body))` is a
    /// non-error answer the caller decodes itself (a 409 seal refusal).
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<T, CtlError> {
        let a = self.https.request(method, path, body, token)?;
        if (200..300).contains(&a.status) {
            return control::decode_json(&a.body).map_err(|e| {
                CtlError::new(
                    Kind::Protocol,
                    format!("{} answered {path} with {e}", self.addr()),
                )
            });
        }
        Err(self.error_of(a.status, &a.body, path))
    }

    fn error_of(&self, status: u16, body: &[u8], path: &str) -> CtlError {
        match control::decode_json::<ErrorBody>(body) {
            Ok(e) => CtlError::new(e.error.kind.into(), e.error.message),
            Err(_) => CtlError::new(
                Kind::Protocol,
                format!(
                    "{} answered {path} with HTTP {status} and no ODT error: is it an ODT \
                     appliance's control port?",
                    self.addr()
                ),
            ),
        }
    }

    /// `GET /api/v1/status`, with the session's token if given.
    pub fn status(&self, token: Option<&str>) -> Result<StatusReport, CtlError> {
        self.call(Method::GET, "/api/v1/status", None, token)
    }

    /// `POST /api/v1/unlock`; saves the session it returns.
    pub fn unlock(&self, code: &UnlockCode) -> Result<UnlockReply, CtlError> {
        let req = UnlockRequest {
            code: SecretText::new(code.expose().to_string()),
        };
        let body = Zeroizing::new(serde_json::to_vec(&req).expect("requests serialise"));
        let r: UnlockReply =
            self.call(Method::POST, "/api/v1/unlock", Some(body.to_vec()), None)?;
        self.keep(&r.session);
        Ok(r)
    }

    /// Signs in with the code without sending it (challenge and MAC); saves the session.
    pub fn sign_in(&self, code: &UnlockCode) -> Result<SessionReply, CtlError> {
        let c: ChallengeReply = self.call(Method::GET, "/api/v1/challenge", None, None)?;
        let ch = control::parse_challenge(&c.challenge).ok_or_else(|| {
            CtlError::new(
                Kind::Protocol,
                format!("{} sent a malformed challenge", self.addr()),
            )
        })?;
        let key = control::ControlKey::from_code(code);
        let req = SignInRequest {
            challenge: Some(c.challenge),
            mac: Some(hex::encode(key.sign_in_mac(&ch))),
            ..SignInRequest::default()
        };
        let body = serde_json::to_vec(&req).expect("requests serialise");
        let s: SessionReply = self.call(Method::POST, "/api/v1/session", Some(body), None)?;
        self.keep(&s);
        Ok(s)
    }

    fn keep(&self, s: &SessionReply) {
        if let Err(e) = session::save(self.addr(), self.fp, s) {
            eprintln!(
                "odt: warning: the session is not saved ({e}); the next command will ask for the code"
            );
        }
    }

    /// A session token: the saved session, else a sign-in with the code (the code file, the
    /// terminal, or with `stdin` one line of stdin). `None` if there is neither.
    pub fn token(&self, stdin: bool) -> Result<Option<SecretText>, CtlError> {
        if self.code_file.is_none()
            && let Some(t) = session::load(&self.fp)
        {
            return Ok(Some(t));
        }
        match read_unlock_code(self.code_file.as_deref(), stdin)? {
            Some(code) => Ok(Some(self.sign_in(&code)?.token)),
            None => Ok(None),
        }
    }

    /// Runs `f` with a token; when a saved session turns out to have ended (the appliance
    /// restarted, or the seal ended it), forgets it and signs in with the code once.
    pub fn with_token<T>(
        &self,
        stdin: bool,
        what: &str,
        f: impl Fn(&str) -> Result<T, CtlError>,
    ) -> Result<T, CtlError> {
        let Some(t) = self.token(stdin)? else {
            return Err(CtlError::new(
                Kind::Unauthenticated,
                format!(
                    "{what} needs the unlock code or a session: run `odt unlock` first, or give \
                     the code with --code-file or on stdin"
                ),
            ));
        };
        match f(t.expose()) {
            Err(e) if e.kind == Kind::Unauthenticated && self.code_file.is_none() => {
                session::end(&self.fp);
                match read_unlock_code(None, stdin)? {
                    Some(code) => f(self.sign_in(&code)?.token.expose()),
                    None => Err(e.context("the saved session has ended")),
                }
            }
            r => r,
        }
    }

    /// `GET /api/v1/bundles`.
    pub fn bundles(&self, token: &str) -> Result<odt_store::trip::bundle::BundleReport, CtlError> {
        self.call(Method::GET, "/api/v1/bundles", None, Some(token))
    }

    /// `GET /api/v1/bom?format=F`: the bill of materials as the appliance sends it.
    pub fn bom(&self, token: &str, format: &str) -> Result<Vec<u8>, CtlError> {
        let path = format!("/api/v1/bom?format={format}");
        let a = self.https.request(Method::GET, &path, None, Some(token))?;
        if a.status == 200 {
            return Ok(a.body.to_vec());
        }
        Err(self.error_of(a.status, &a.body, "/api/v1/bom"))
    }

    /// `POST /api/v1/seal`: the seal, or its refusal (bundles with errors).
    pub fn seal(
        &self,
        token: &str,
        force: bool,
    ) -> Result<Result<SealReply, SealRefused>, CtlError> {
        let body = serde_json::to_vec(&control::SealRequest { force }).expect("requests serialise");
        let a = self
            .https
            .request(Method::POST, "/api/v1/seal", Some(body), Some(token))?;
        let decode_err = |e: String| {
            CtlError::new(
                Kind::Protocol,
                format!("{} answered the seal with {e}", self.addr()),
            )
        };
        match a.status {
            200 => control::decode_json(&a.body).map(Ok).map_err(decode_err),
            409 if control::decode_json::<SealRefused>(&a.body).is_ok() => {
                control::decode_json(&a.body).map(Err).map_err(decode_err)
            }
            s => Err(self.error_of(s, &a.body, "/api/v1/seal")),
        }
    }

    /// Ends the saved session here (the seal ended it on the appliance).
    pub fn forget_session(&self) {
        session::end(&self.fp);
    }
}

/// The fingerprint on a sheet's comment line, if any.
fn sheet_fingerprint(p: &Path) -> Result<Option<Fingerprint>, CtlError> {
    let text = sheet_text(p)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix(SHEET_FINGERPRINT))
        .map(|f| parse_fingerprint(f, &format!("the fingerprint in {}", p.display())))
        .transpose()
}

/// The error for a command that has no fingerprint to pin: says what the appliance
/// presents (nothing is sent to it), so the user can compare it with the unlock sheet.
fn no_fingerprint(addr: &str) -> CtlError {
    let seen = Https::new(addr, Fingerprint([0; 32])).ok().and_then(|h| {
        let _ = h.request(Method::GET, "/api/v1/status", None, None);
        h.presented()
    });
    let hint = match seen {
        Some(fp) => format!(
            " The appliance at {addr} presents {fp}: if the unlock sheet shows the same, pass \
             --fingerprint {fp}"
        ),
        None => String::new(),
    };
    CtlError::new(
        Kind::Usage,
        format!(
            "no certificate fingerprint to pin for {addr}: pass --fingerprint (on the unlock \
             sheet), --code-file with the sheet, or --job DIR.{hint}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_port_is_added_only_when_missing() {
        assert_eq!(with_default_port("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(with_default_port("127.0.0.1"), "127.0.0.1:7049");
        assert_eq!(with_default_port("appliance.local"), "appliance.local:7049");
        assert_eq!(with_default_port("appliance.local:8"), "appliance.local:8");
        assert_eq!(with_default_port("::1"), "[::1]:7049");
        assert_eq!(with_default_port("[::1]"), "[::1]:7049");
        assert_eq!(with_default_port("[::1]:5"), "[::1]:5");
    }

    #[test]
    fn code_file_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("code");
        let code = UnlockCode::generate();
        let tls = TlsIdentity::generate("j").unwrap();
        std::fs::write(&p, code_file_text("j", "n", &code, &tls)).unwrap();
        assert!(read_unlock_code(Some(&p), false).unwrap().unwrap() == code);
        assert_eq!(sheet_fingerprint(&p).unwrap(), Some(tls.fingerprint()));
        std::fs::write(&p, format!("\n  {}  \n", code.expose())).unwrap();
        assert!(read_unlock_code(Some(&p), false).unwrap().unwrap() == code);
        assert_eq!(sheet_fingerprint(&p).unwrap(), None);
        std::fs::write(&p, "not a code\n").unwrap();
        let e = read_unlock_code(Some(&p), false).unwrap_err().message;
        assert!(e.contains(&p.display().to_string()), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_unlock_code(Some(&p), false).unwrap().is_none());
    }
}
