//! Failures of the control commands (`unlock`, `status`, `bundles`, `seal`): a stable kind
//! for programs (`--json` prints `{"error": {"kind", "message"}}`), a message for people,
//! and one exit code per group of kinds.

use odt_store::trip::control_api::ErrorKind;
use serde::Serialize;

/// Exit codes of the control commands (also in their `--help` and the README).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failed (on the appliance, or anything not below)
  2  wrong usage (options, a missing fingerprint)
  3  a VM bundle has errors (bundles; seal refused)
  4  wrong unlock code, or not signed in
  5  appliance unreachable, busy or not answering as one
  6  certificate fingerprint mismatch (not the appliance of the unlock sheet)
  7  wrong state (locked; not sealed yet)";

/// What went wrong, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The unlock code does not open the appliance.
    WrongCode,
    /// No session (or it ended) and no code to sign in with.
    Unauthenticated,
    /// The operation needs an unlocked appliance.
    Locked,
    /// The operation needs a sealed appliance.
    NotSealed,
    /// The appliance refused the request as malformed.
    BadRequest,
    /// The appliance knows no such route.
    NotFound,
    /// The appliance has too many connections open.
    Busy,
    /// The operation failed on the appliance, or here.
    Failed,
    /// No connection, or no answer in time.
    Unreachable,
    /// The appliance presented another certificate than the one pinned.
    FingerprintMismatch,
    /// The answer is not the control API's.
    Protocol,
    /// Wrong options, or nothing to pin.
    Usage,
}

impl Kind {
    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::WrongCode | Kind::Unauthenticated => 4,
            Kind::Unreachable | Kind::Busy | Kind::Protocol => 5,
            Kind::FingerprintMismatch => 6,
            Kind::Locked | Kind::NotSealed => 7,
            Kind::Usage => 2,
            Kind::BadRequest | Kind::NotFound | Kind::Failed => 1,
        }
    }
}

impl From<ErrorKind> for Kind {
    fn from(k: ErrorKind) -> Kind {
        match k {
            ErrorKind::WrongCode => Kind::WrongCode,
            ErrorKind::Unauthenticated => Kind::Unauthenticated,
            ErrorKind::Locked => Kind::Locked,
            ErrorKind::NotSealed => Kind::NotSealed,
            ErrorKind::BadRequest => Kind::BadRequest,
            ErrorKind::NotFound => Kind::NotFound,
            ErrorKind::Busy => Kind::Busy,
            ErrorKind::Failed => Kind::Failed,
        }
    }
}

/// A failed control command.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct CtlError {
    /// What went wrong, by kind.
    pub kind: Kind,
    /// What failed, where, and what to do.
    pub message: String,
}

impl CtlError {
    /// An error of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> CtlError {
        CtlError {
            kind,
            message: message.into(),
        }
    }

    /// The same error with `what` in front of the message.
    pub fn context(mut self, what: &str) -> CtlError {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// Reports `e` (JSON on stdout with `json`, and always a line on stderr) and returns the
/// exit code.
pub fn report(e: &CtlError, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "error": e }))
                .expect("errors serialise")
        );
    }
    eprintln!("odt: error: {}", e.message);
    e.kind.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_exit_codes() {
        let e = CtlError::new(Kind::FingerprintMismatch, "m");
        assert_eq!(
            serde_json::to_string(&serde_json::json!({ "error": e })).unwrap(),
            r#"{"error":{"kind":"fingerprint-mismatch","message":"m"}}"#
        );
        assert_eq!(Kind::from(ErrorKind::WrongCode).exit_code(), 4);
        assert_eq!(Kind::Unreachable.exit_code(), 5);
        for k in [Kind::WrongCode, Kind::Busy, Kind::Locked, Kind::Usage] {
            assert!(EXIT_CODES.contains(&format!("  {}  ", k.exit_code())));
        }
    }
}
