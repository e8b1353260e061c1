//! Failures of the control commands (`unlock`, `status`, `bundles`, `seal`, `bom`): the
//! control API's error kinds as the [`crate::exit`] kinds every command reports.

use odt_store::trip::control_api::ErrorKind;
use serde::Serialize;

pub use crate::exit::{EXIT_CODES, Kind};

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
    crate::exit::report(
        &crate::exit::Failure {
            kind: e.kind,
            message: e.message.clone(),
        },
        json,
    )
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
