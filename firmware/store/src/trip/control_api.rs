//! Messages of the appliance's control API, shared by the firmware (server) and the `odt`
//! tool (client). Types and authentication only: no networking here.
//!
//! # Wire
//! TCP, one JSON document per line (UTF-8, `\n`-terminated, at most [`MAX_LINE`] bytes):
//! 1. on connect the appliance sends a [`Hello`] carrying a fresh random 32-byte challenge;
//! 2. the client sends one [`Request`];
//! 3. the appliance answers one [`Response`] and closes the connection.
//!
//! # Authentication
//! - [`Op::Unlock`] carries the unlock code itself. The code is what unwraps the keys, so
//!   a wrong code fails without the appliance having to know the right one. The control
//!   address is loopback by default: the code crosses no network unless the operator
//!   configures a remote control address (then use a trusted network or an SSH tunnel).
//! - Every other operation carries a MAC: `BLAKE3-keyed(control_key, DOMAIN ‖ challenge ‖
//!   postcard(op))` with `control_key = BLAKE3-derive_key(KEY_CONTEXT, normalised code)`
//!   ([`ControlKey`]). The appliance derives the same key from the code it was unlocked
//!   with and keeps only the key, never the code. The per-connection challenge makes every
//!   MAC single-use, so a recorded request cannot be replayed.
//! - Before unlock the appliance holds no key and can verify no MAC: it then answers
//!   [`Op::Status`] with the state alone ("locked") and nothing else.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::keys::UnlockCode;

/// Version of the control protocol spoken by this build.
pub const PROTOCOL: u32 = 1;
/// Control port used when an address names no port.
pub const DEFAULT_PORT: u16 = 7049;
/// Longest line either side accepts.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes of a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// Context string of the control-key derivation (never change: clients derive it too).
const KEY_CONTEXT: &str = "odt-appliance 2025 control-api key v1";
/// Domain separation prefix of every MAC.
const MAC_DOMAIN: &[u8] = b"odt-control-mac-v1\0";

/// First line the appliance sends on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`] of the appliance.
    pub protocol: u32,
    /// Hex of a fresh random [`CHALLENGE_LEN`]-byte challenge, valid for this connection.
    pub challenge: String,
}

/// The one request a client sends per connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Hex MAC over the challenge and `op` (see [`ControlKey::mac`]); absent for unlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Operations of the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Op {
    /// Unlock the store with the customer's unlock code (no MAC: the code authenticates).
    Unlock {
        /// The unlock code as the customer typed it.
        code: SecretText,
    },
    /// Report state, capacity and counters.
    Status,
    /// Check every VM bundle (what the seal would check) without sealing.
    Bundles,
    /// Check every VM bundle, then seal: flush, sign the seal record, make the export
    /// read-only. Refused if a bundle has errors, unless `force`.
    Seal {
        /// Seal although bundles have errors (they are recorded in the seal).
        force: bool,
    },
    /// Test hook: make the export read-only as a seal would, without writing a seal
    /// record. Refused unless the appliance runs with `--test-hooks`; the real seal
    /// (issue 4) replaces it.
    TestSeal,
}

impl Op {
    /// Short name for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unlock { .. } => "unlock",
            Op::Status => "status",
            Op::Bundles => "bundles",
            Op::Seal { .. } => "seal",
            Op::TestSeal => "test-seal",
        }
    }
}

/// The appliance's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Response {
    /// The store is unlocked (now or already).
    Unlocked(UnlockReport),
    /// State and counters.
    Status(StatusReport),
    /// The bundle check.
    Bundles(crate::trip::bundle::BundleReport),
    /// The appliance is sealed.
    Sealed(SealReply),
    /// The seal was refused: bundles have errors.
    SealRefused {
        /// What to do about it.
        reason: String,
        /// The check that found the errors.
        bundles: crate::trip::bundle::BundleReport,
    },
    /// The request failed.
    Error(ErrorReply),
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

/// Answer to a status request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Life-cycle state.
    pub state: State,
    /// Seconds since the appliance started.
    pub uptime_secs: u64,
    /// Job, device set and counters; absent while locked.
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
    /// Bytes written by NFS clients since the appliance started.
    pub written_bytes: u64,
    /// Client write rate over the last few seconds, bytes per second.
    pub write_rate_bytes_per_sec: u64,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The unlock code does not open the keys.
    WrongCode,
    /// The MAC is missing or wrong.
    Unauthenticated,
    /// The operation needs an unlocked appliance.
    Locked,
    /// The request could not be parsed or is not allowed.
    BadRequest,
    /// The operation was valid but failed on the appliance.
    Failed,
}

/// An error answer: a kind for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// What failed and what to do.
    pub message: String,
}

/// A secret string in a message (the unlock code): zeroized on drop, never printed.
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

/// Key that authenticates control requests, derived from the unlock code.
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

    /// MAC of `op` under this key for one connection's challenge.
    pub fn mac(&self, challenge: &[u8; CHALLENGE_LEN], op: &Op) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(MAC_DOMAIN);
        h.update(challenge);
        // postcard is deterministic for a given type, and both sides share these types.
        let body = postcard::to_stdvec(op).expect("control ops always encode");
        h.update(&body);
        *h.finalize().as_bytes()
    }

    /// Checks a hex MAC in constant time.
    pub fn verify(&self, challenge: &[u8; CHALLENGE_LEN], op: &Op, mac_hex: &str) -> bool {
        let Ok(bytes) = hex::decode(mac_hex) else {
            return false;
        };
        let Ok(given) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return false;
        };
        // blake3::Hash compares in constant time.
        blake3::Hash::from(given) == blake3::Hash::from(self.mac(challenge, op))
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

/// Parses a challenge from its hex form in a [`Hello`].
pub fn parse_challenge(hex_text: &str) -> Option<[u8; CHALLENGE_LEN]> {
    let bytes = hex::decode(hex_text).ok()?;
    <[u8; CHALLENGE_LEN]>::try_from(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn mac_binds_key_challenge_and_op() {
        let code = UnlockCode::generate();
        let key = ControlKey::from_code(&code);
        let respelled = UnlockCode::from_str(&code.expose().to_lowercase()).unwrap();
        assert!(key.same_as(&ControlKey::from_code(&respelled)));
        let c1 = new_challenge();
        let c2 = new_challenge();
        assert_ne!(c1, c2);
        let mac = hex::encode(key.mac(&c1, &Op::Status));
        assert!(key.verify(&c1, &Op::Status, &mac));
        assert!(
            !key.verify(&c2, &Op::Status, &mac),
            "a MAC is bound to its challenge"
        );
        assert!(
            !key.verify(&c1, &Op::TestSeal, &mac),
            "a MAC is bound to its op"
        );
        let other = ControlKey::from_code(&UnlockCode::generate());
        assert!(
            !other.verify(&c1, &Op::Status, &mac),
            "a MAC is bound to its key"
        );
        assert!(!key.verify(&c1, &Op::Status, "zz"));
        assert!(!key.verify(&c1, &Op::Status, &mac[..62]));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let op = Op::Unlock {
            code: SecretText::new("ABCDE-12345-ABCDE-12345".into()),
        };
        let req = Request { op, mac: None };
        assert!(!format!("{req:?}").contains("ABCDE"));
        let key = ControlKey::from_code(&UnlockCode::generate());
        assert_eq!(format!("{key:?}"), "ControlKey(<redacted>)");
    }

    #[test]
    fn challenge_parsing() {
        let c = new_challenge();
        assert_eq!(parse_challenge(&hex::encode(c)), Some(c));
        assert_eq!(parse_challenge("abcd"), None);
        assert_eq!(parse_challenge("not hex"), None);
    }
}
