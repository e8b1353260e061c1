//! Messages of the appliance's control API, shared by the firmware (server) and the `odt`
//! tool (client): the JSON bodies, the error shape, authentication helpers and the decoders
//! of request bodies. No networking here; the HTTP routes are documented in
//! `docs/control-api.md`.
//!
//! # Authentication
//! - `POST /api/v1/unlock` carries the unlock code itself: the code is what unwraps the
//!   keys, so only it can unlock. It crosses the network inside TLS only, to an appliance
//!   whose certificate the client pinned.
//! - Everything else that is not public needs a **session**: a random bearer token the
//!   appliance returns on unlock or on sign-in, short-lived, kept in the appliance's memory
//!   only (a restart ends every session), ended by the seal.
//! - Signing in proves the code without sending it: the client fetches a single-use
//!   challenge and sends `BLAKE3-keyed(control_key, DOMAIN ‖ challenge)` with
//!   `control_key = BLAKE3-derive_key(KEY_CONTEXT, normalised code)` ([`ControlKey`]). The
//!   appliance keeps only that key, never the code. (The web page's sign-in form sends the
//!   code itself, inside TLS.)
//! - Before unlock the appliance holds no key and can verify nothing: it answers status
//!   with the public fields alone.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::keys::UnlockCode;
use crate::crypto::tls::Fingerprint;

/// Version of the control API spoken by this build (the `/api/v1` prefix).
pub const PROTOCOL: u32 = 2;
/// Path prefix of every API route.
pub const API: &str = "/api/v1";
/// Control port used when an address names none.
pub const DEFAULT_PORT: u16 = 7049;
/// Largest request body either side accepts.
pub const MAX_BODY: usize = 16 * 1024;
/// Bytes of a challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Name of the web page's session cookie.
pub const COOKIE: &str = "odt_session";

/// Context string of the control-key derivation (never change: clients derive it too).
const KEY_CONTEXT: &str = "odt-appliance 2025 control-api key v1";
/// Domain separation prefix of every sign-in MAC.
const MAC_DOMAIN: &[u8] = b"odt-control-sign-in-v2\0";

/// Life-cycle state of the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Booted, keys still wrapped: the NFS export refuses every operation.
    Locked,
    /// Keys unwrapped, store open: the export is read-write.
    Unlocked,
    /// Sealed: the export is read-only, reads still work.
    Sealed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Locked => "locked",
            State::Unlocked => "unlocked",
            State::Sealed => "sealed",
        })
    }
}

/// `POST /api/v1/unlock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnlockRequest {
    /// The unlock code as the customer typed it.
    pub code: SecretText,
}

/// `POST /api/v1/session`: the code itself, or a MAC over a challenge (see
/// [`ControlKey::sign_in_mac`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignInRequest {
    /// The unlock code (sign-in by code, as the page's form does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<SecretText>,
    /// Hex of a challenge from `GET /api/v1/challenge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// Hex MAC of that challenge under the code's control key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `POST /api/v1/seal`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SealRequest {
    /// Seal although bundles have errors (they are recorded in the seal).
    #[serde(default)]
    pub force: bool,
}

/// `GET /api/v1/challenge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeReply {
    /// Hex of [`CHALLENGE_LEN`] random bytes; single use.
    pub challenge: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
}

/// A session: the bearer token for `Authorization: Bearer TOKEN`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionReply {
    /// The bearer token (random 256 bits, hex); the appliance keeps only its hash.
    pub token: SecretText,
    /// When it ends unless used (Unix seconds); each use extends it.
    pub expires_unix: i64,
}

/// Answer to a successful unlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockReport {
    /// State after the unlock (unlocked, or sealed if the store was sealed before).
    pub state: State,
    /// True if the appliance was unlocked before this request (the code was checked).
    pub already_unlocked: bool,
    /// Job the devices were provisioned for.
    pub job_id: String,
    /// Name of that job.
    pub job_name: String,
    /// Hex id of the device set.
    pub set_id: String,
}

/// `POST /api/v1/unlock` answer: the report and a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnlockReply {
    /// What the unlock did.
    #[serde(flatten)]
    pub report: UnlockReport,
    /// The session the unlock opened.
    pub session: SessionReply,
}

/// The seal, as status shows it (public: the seal code goes on the label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealInfo {
    /// The seal code (the label's).
    pub seal_code: String,
    /// When the store was sealed, in Unix seconds.
    pub sealed_unix: i64,
    /// Files sealed.
    pub files: u64,
    /// Sum of the sealed files' sizes.
    pub bytes: u64,
}

/// `GET /api/v1/status`. Without a session only the public fields are filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Life-cycle state.
    pub state: State,
    /// Seconds since the appliance started.
    pub uptime_secs: u64,
    /// SHA-256 fingerprint of the appliance's certificate (compare with the unlock sheet).
    pub fingerprint: Fingerprint,
    /// The seal, once sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealInfo>,
    /// True if this answer was for a signed-in client (then `store` is filled once unlocked).
    #[serde(default)]
    pub signed_in: bool,
    /// Job, device set and counters; only for a session, and only once unlocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreReport>,
}

/// What an unlocked appliance reports about its store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Job the devices were provisioned for.
    pub job_id: String,
    /// Name of that job.
    pub job_name: String,
    /// Hex id of the device set.
    pub set_id: String,
    /// Number of data devices.
    pub devices: u32,
    /// Bytes the data areas of all devices can hold.
    pub capacity_bytes: u64,
    /// Bytes still free for data.
    pub free_bytes: u64,
    /// Bytes held by deleted, truncated or overwritten data (records no file refers to),
    /// not free until their segments are cleaned. Absent from older appliances: 0.
    #[serde(default)]
    pub dead_bytes: u64,
    /// Bytes the log occupies (compressed, encrypted records and segment framing).
    pub stored_bytes: u64,
    /// Sum of the sizes of all files.
    pub logical_bytes: u64,
    /// Regular files.
    pub files: u64,
    /// Directories (the root included).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of the metadata journal in use.
    pub journal_used_bytes: u64,
    /// Size of the metadata journal.
    pub journal_bytes: u64,
    /// Segments the cleaner freed since the devices were provisioned. Absent from older
    /// appliances: 0.
    #[serde(default)]
    pub segments_cleaned: u64,
    /// Times the metadata journal was compacted since the devices were provisioned. Absent
    /// from older appliances: 0.
    #[serde(default)]
    pub journal_compactions: u64,
    /// Bytes written by NFS clients since the appliance started.
    pub written_bytes: u64,
    /// Client write rate over the last few seconds, bytes per second.
    pub write_rate_bytes_per_sec: u64,
}

/// Answer to a successful seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealReply {
    /// The seal code for the label and for the provider.
    pub seal_code: String,
    /// Job the devices were provisioned for.
    pub job_id: String,
    /// Files, directories and bytes sealed.
    pub files: u64,
    /// Directories sealed, the root included.
    pub dirs: u64,
    /// Sum of the sealed files' sizes.
    pub bytes: u64,
    /// When, in Unix seconds.
    pub sealed_unix: i64,
    /// The bundle check done before sealing.
    pub bundles: crate::trip::bundle::BundleReport,
}

/// Answer to a seal refused because bundles have errors (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRefused {
    /// Always false.
    pub sealed: bool,
    /// What to do about it.
    pub reason: String,
    /// The check that found the errors.
    pub bundles: crate::trip::bundle::BundleReport,
}

/// Why a request failed: stable names for programs (`error.kind` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The unlock code does not open the keys.
    WrongCode,
    /// No session, an expired one, or a wrong MAC.
    Unauthenticated,
    /// The operation needs an unlocked appliance.
    Locked,
    /// The operation needs a sealed appliance.
    NotSealed,
    /// The request could not be parsed or is not allowed.
    BadRequest,
    /// No such route.
    NotFound,
    /// The appliance has too many connections open (from this address or in all).
    Busy,
    /// The operation was valid but failed on the appliance.
    Failed,
}

impl ErrorKind {
    /// The HTTP status the appliance answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::WrongCode => 403,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Locked | ErrorKind::NotSealed => 409,
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Busy => 503,
            ErrorKind::Failed => 500,
        }
    }

    /// The kebab-case name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::WrongCode => "wrong-code",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Locked => "locked",
            ErrorKind::NotSealed => "not-sealed",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Busy => "busy",
            ErrorKind::Failed => "failed",
        }
    }
}

/// An error answer: a kind for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// What failed and what to do.
    pub message: String,
}

/// The body of every error answer: `{"error": {"kind": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What failed.
    pub error: ErrorReply,
}

/// A secret string in a message (the unlock code, a session token): zeroized on drop,
/// never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        SecretText(s)
    }

    /// The secret. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Key that authenticates sign-ins, derived from the unlock code.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ControlKey([u8; 32]);

impl fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlKey(<redacted>)")
    }
}

impl ControlKey {
    /// Derives the key from an unlock code (normalised by its parser, so any spelling of
    /// the same code gives the same key).
    pub fn from_code(code: &UnlockCode) -> Self {
        ControlKey(blake3::derive_key(KEY_CONTEXT, code.expose().as_bytes()))
    }

    /// The sign-in MAC for one challenge.
    pub fn sign_in_mac(&self, challenge: &[u8; CHALLENGE_LEN]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(MAC_DOMAIN);
        h.update(challenge);
        *h.finalize().as_bytes()
    }

    /// Checks a hex sign-in MAC in constant time.
    pub fn verify(&self, challenge: &[u8; CHALLENGE_LEN], mac_hex: &str) -> bool {
        let Ok(bytes) = hex::decode(mac_hex) else {
            return false;
        };
        let Ok(given) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return false;
        };
        // blake3::Hash compares in constant time.
        blake3::Hash::from(given) == blake3::Hash::from(self.sign_in_mac(challenge))
    }

    /// True if both keys are equal (constant time).
    pub fn same_as(&self, other: &ControlKey) -> bool {
        blake3::Hash::from(self.0) == blake3::Hash::from(other.0)
    }
}

/// A fresh random challenge.
pub fn new_challenge() -> [u8; CHALLENGE_LEN] {
    let mut c = [0u8; CHALLENGE_LEN];
    crate::crypto::keys::random_bytes(&mut c);
    c
}

/// Parses a challenge from its hex form.
pub fn parse_challenge(hex_text: &str) -> Option<[u8; CHALLENGE_LEN]> {
    let bytes = hex::decode(hex_text).ok()?;
    <[u8; CHALLENGE_LEN]>::try_from(bytes.as_slice()).ok()
}

/// Decodes a JSON request or answer body (untrusted bytes from the network), refusing
/// bodies over [`MAX_BODY`] before parsing. An empty body decodes as `{}`.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() > MAX_BODY {
        return Err(format!("the body is longer than {MAX_BODY} bytes"));
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("the body is not the JSON expected: {e}"))
}

/// The fields of an HTML form post (`application/x-www-form-urlencoded`, untrusted bytes)
/// that the page uses. Values are zeroized on drop: the code is one of them.
#[derive(Default)]
pub struct Form {
    /// `code`: the unlock code typed into the sign-in form.
    pub code: Option<Zeroizing<String>>,
    /// `csrf`: the form token of the session.
    pub csrf: Option<String>,
    /// `confirm`: the seal confirmation box.
    pub confirm: bool,
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Form")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("csrf", &self.csrf)
            .field("confirm", &self.confirm)
            .finish()
    }
}

/// Decodes a form post, refusing bodies over [`MAX_BODY`]; unknown fields are ignored,
/// a repeated field keeps its last value.
pub fn decode_form(body: &[u8]) -> Result<Form, String> {
    if body.len() > MAX_BODY {
        return Err(format!("the form is longer than {MAX_BODY} bytes"));
    }
    let mut form = Form::default();
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "code" => form.code = Some(Zeroizing::new(v.into_owned())),
            "csrf" => form.csrf = Some(v.into_owned()),
            "confirm" => form.confirm = matches!(&*v, "yes" | "on" | "true"),
            _ => {}
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn mac_binds_key_and_challenge() {
        let code = UnlockCode::generate();
        let key = ControlKey::from_code(&code);
        let respelled = UnlockCode::from_str(&code.expose().to_lowercase()).unwrap();
        assert!(key.same_as(&ControlKey::from_code(&respelled)));
        let c1 = new_challenge();
        let c2 = new_challenge();
        assert_ne!(c1, c2);
        let mac = hex::encode(key.sign_in_mac(&c1));
        assert!(key.verify(&c1, &mac));
        assert!(!key.verify(&c2, &mac), "a MAC is bound to its challenge");
        let other = ControlKey::from_code(&UnlockCode::generate());
        assert!(!other.verify(&c1, &mac), "a MAC is bound to its key");
        assert!(!key.verify(&c1, "zz"));
        assert!(!key.verify(&c1, &mac[..62]));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let req = UnlockRequest {
            code: SecretText::new("ABCDE-12345-ABCDE-12345".into()),
        };
        assert!(!format!("{req:?}").contains("ABCDE"));
        let key = ControlKey::from_code(&UnlockCode::generate());
        assert_eq!(format!("{key:?}"), "ControlKey(<redacted>)");
        let f = decode_form(b"code=ABCDE-12345&csrf=x").unwrap();
        assert!(!format!("{f:?}").contains("ABCDE"));
    }

    #[test]
    fn bodies_decode_or_say_why() {
        let r: SealRequest = decode_json(b"").unwrap();
        assert!(!r.force);
        let r: SealRequest = decode_json(br#"{"force": true}"#).unwrap();
        assert!(r.force);
        let e = decode_json::<UnlockRequest>(b"{}").unwrap_err();
        assert!(e.contains("code"), "{e}");
        let big = vec![b' '; MAX_BODY + 1];
        assert!(decode_json::<SealRequest>(&big).is_err());
        let f = decode_form(b"code=abcd%2Defgh+x&csrf=t1&confirm=yes&other=1").unwrap();
        assert_eq!(f.code.as_deref().map(String::as_str), Some("abcd-efgh x"));
        assert_eq!(f.csrf.as_deref(), Some("t1"));
        assert!(f.confirm);
        assert!(decode_form(&vec![b'a'; MAX_BODY + 1]).is_err());
        let e = ErrorBody {
            error: ErrorReply {
                kind: ErrorKind::WrongCode,
                message: "m".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"kind":"wrong-code","message":"m"}}"#
        );
    }

    #[test]
    fn challenge_parsing() {
        let c = new_challenge();
        assert_eq!(parse_challenge(&hex::encode(c)), Some(c));
        assert_eq!(parse_challenge("abcd"), None);
        assert_eq!(parse_challenge("not hex"), None);
    }
}
