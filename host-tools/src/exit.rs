//! One failure convention for every command: a stable kind for programs, a message for
//! people, one exit code per group of kinds ([`EXIT_CODES`], shown in every command's
//! `--help` and in the README). With `--json` a failure prints exactly one object on
//! stdout, `{"error": {"kind": "...", "message": "..."}}`; the message always goes to
//! stderr too.
//!
//! The library errors are mapped to kinds here only ([`classify`]), by downcasting at the
//! binary edge, so a new variant needs one line below.

use odt_store::error::{DeviceError, ErrorKind, FormatError, KeyError, StoreError, TripError};
use serde::Serialize;

use crate::control::error::CtlError;
use crate::erase::EraseError;
use crate::import::ImportError;
use crate::ingest::IngestError;

/// Exit codes of every `odt` command (also in each `--help` and the README).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failed (anything not below; --json prints {\"error\": {\"kind\", \"message\"}})
  2  wrong usage (options, a missing fingerprint)
  3  checks found problems: damage, quarantined or refused files, VM bundle errors,
     a broken seal, a bill of materials that does not match
  4  wrong unlock code, or not signed in
  5  appliance unreachable, busy or not answering as one
  6  certificate fingerprint mismatch (not the appliance of the unlock sheet)
  7  wrong state (locked; not sealed yet)
  8  refused to overwrite or destroy (a conflict); nothing was changed";

/// Checks ran and found problems (damage, quarantined files, bundle errors, broken seal).
pub const PROBLEMS_FOUND: i32 = 3;

/// What went wrong, by kind (serialised in kebab-case: `wrong-code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The unlock code does not open the appliance.
    WrongCode,
    /// No session (or it ended) and no code to sign in with.
    Unauthenticated,
    /// The operation needs an unlocked appliance.
    Locked,
    /// The operation needs a sealed appliance or device set.
    NotSealed,
    /// The appliance refused the request as malformed.
    BadRequest,
    /// No such thing (an appliance route, a vCenter object, a file).
    NotFound,
    /// The appliance has too many connections open.
    Busy,
    /// The operation failed on the appliance, or here.
    Failed,
    /// No connection, or no answer in time.
    Unreachable,
    /// The appliance presented another certificate than the one pinned.
    FingerprintMismatch,
    /// The answer is not the control API's (or vCenter's).
    Protocol,
    /// Wrong options, or nothing to pin.
    Usage,
    /// The job directory or one of its files cannot be read.
    NoJob,
    /// The job file is malformed.
    BadJob,
    /// The job has no provisioned devices.
    NotProvisioned,
    /// The job's ingest identity does not open the devices' keys.
    WrongKey,
    /// A device cannot be opened or read (missing, unreadable, I/O error).
    Device,
    /// A device does not carry an ODT superblock.
    NotADevice,
    /// A device is shorter than its superblock says.
    Truncated,
    /// The devices given are not one complete set of this job.
    DeviceSet,
    /// A device was erased.
    Erased,
    /// Metadata on a device is corrupt.
    Corrupt,
    /// File data is damaged (its tag or hash does not check out).
    Damaged,
    /// The seal is missing or does not check out.
    SealBroken,
    /// No space left on a device or in the datastore.
    NoSpace,
    /// The datastore cannot be written.
    Datastore,
    /// Something is in the way and would be overwritten or destroyed; nothing changed.
    Conflict,
    /// vCenter refused the request.
    Vcenter,
    /// vCenter's certificate is not trusted.
    Untrusted,
}

impl Kind {
    /// The process exit code ([`EXIT_CODES`]).
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => 2,
            Kind::Damaged | Kind::SealBroken => PROBLEMS_FOUND,
            Kind::WrongCode | Kind::Unauthenticated => 4,
            Kind::Unreachable | Kind::Busy | Kind::Protocol => 5,
            Kind::FingerprintMismatch => 6,
            Kind::Locked | Kind::NotSealed => 7,
            Kind::Conflict => 8,
            Kind::BadRequest
            | Kind::NotFound
            | Kind::Failed
            | Kind::NoJob
            | Kind::BadJob
            | Kind::NotProvisioned
            | Kind::WrongKey
            | Kind::Device
            | Kind::NotADevice
            | Kind::Truncated
            | Kind::DeviceSet
            | Kind::Erased
            | Kind::Corrupt
            | Kind::NoSpace
            | Kind::Datastore
            | Kind::Vcenter
            | Kind::Untrusted => 1,
        }
    }
}

/// A failure of any command, ready to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What went wrong, by kind.
    pub kind: Kind,
    /// What failed, where, and what to do (one line).
    pub message: String,
}

/// A failure of `kind` that says what failed, where and what to do; for commands that
/// find a refusal themselves (returned as their error, then reported like any other).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Its kind.
    pub kind: Kind,
    /// The message.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// The kind of a failure, from the first error in its chain whose type is known.
pub fn classify(e: &anyhow::Error) -> Failure {
    let message = odt_store::error::one_line(e.as_ref());
    let kind = e.chain().find_map(kind_of).unwrap_or(Kind::Failed);
    Failure { kind, message }
}

/// The kind of one error, if its type is one of ours.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    if let Some(r) = e.downcast_ref::<Refusal>() {
        return Some(r.kind);
    }
    if let Some(c) = e.downcast_ref::<CtlError>() {
        return Some(c.kind);
    }
    if let Some(s) = e.downcast_ref::<odt_store::Error>() {
        return Some(store_kind(s.kind()));
    }
    if let Some(i) = e.downcast_ref::<IngestError>() {
        return Some(match i {
            IngestError::Store(s) => store_kind(s.kind()),
            IngestError::Job(_) => Kind::NoJob,
            IngestError::Seal(_) => Kind::SealBroken,
            IngestError::Conflict { .. } => Kind::Conflict,
            IngestError::NoSpace { .. } => Kind::NoSpace,
            IngestError::Busy { .. }
            | IngestError::Conflicts { .. }
            | IngestError::UnsafeDatastore { .. } => Kind::Conflict,
            IngestError::Datastore { .. } | IngestError::NotADirectory { .. } => Kind::Datastore,
            IngestError::State(_) => Kind::Datastore,
        });
    }
    if let Some(x) = e.downcast_ref::<EraseError>() {
        return Some(match x {
            EraseError::Store(s) => store_kind(s.kind()),
            EraseError::Refused(_) => Kind::Conflict,
        });
    }
    if let Some(i) = e.downcast_ref::<ImportError>() {
        use crate::import::vsphere::VsphereError as V;
        return Some(match i {
            ImportError::Store(s) => store_kind(s.kind()),
            ImportError::Seal(_) => Kind::SealBroken,
            // What a name on the command line should find in vCenter or on the device.
            ImportError::Usage(_) => Kind::NotFound,
            ImportError::NotFound { .. } => Kind::NotFound,
            ImportError::Vsphere(v) => match v {
                V::Untrusted { .. } => Kind::Untrusted,
                V::Connect { .. } => Kind::Unreachable,
                V::Protocol { .. } => Kind::Protocol,
                V::Config(_) => Kind::Usage,
                _ => Kind::Vcenter,
            },
        });
    }
    if let Some(c) = e.downcast_ref::<clap::Error>() {
        return Some(if c.exit_code() == 2 {
            Kind::Usage
        } else {
            Kind::Failed
        });
    }
    None
}

/// The kind of a store error.
fn store_kind(k: &ErrorKind) -> Kind {
    match k {
        ErrorKind::Device(d) => match d {
            DeviceError::WritePastEnd { .. } => Kind::NoSpace,
            _ => Kind::Device,
        },
        ErrorKind::Key(KeyError::Wrong(_) | KeyError::WrongIdentity { .. }) => Kind::WrongKey,
        ErrorKind::Key(_) => Kind::Failed,
        ErrorKind::Format(f) => match f {
            FormatError::NotADevice { .. } => Kind::NotADevice,
            FormatError::Truncated { .. } => Kind::Truncated,
            FormatError::DeviceSet(_) => Kind::DeviceSet,
            FormatError::Erased { .. } => Kind::Erased,
            FormatError::Corrupt { .. } => Kind::Corrupt,
        },
        ErrorKind::Namespace(_) => Kind::Failed,
        ErrorKind::Store(s) => match s {
            // Sealed, so read-only: a wrong state for writing.
            StoreError::ReadOnly => Kind::Locked,
            StoreError::NoSpace(_) => Kind::NoSpace,
            StoreError::Damaged { .. } => Kind::Damaged,
            _ => Kind::Failed,
        },
        ErrorKind::Trip(t) => match t {
            TripError::ReadFile { .. } => Kind::NoJob,
            TripError::BadJob { .. } => Kind::BadJob,
            TripError::NotProvisioned => Kind::NotProvisioned,
            TripError::TooSmall(_) | TripError::DeviceTooSmall { .. } => Kind::NoSpace,
            TripError::NotBlank { .. } => Kind::Conflict,
            _ => Kind::Failed,
        },
        // A kind added to the store later reads as a plain failure until mapped here.
        _ => Kind::Failed,
    }
}

/// Reports `f` (with `json`, the one error object on stdout; always a line on stderr) and
/// returns the exit code.
pub fn report(f: &Failure, json: bool) -> i32 {
    if json {
        println!("{}", error_json(f));
    }
    eprintln!("odt: error: {}", f.message);
    f.kind.exit_code()
}

/// `{"error": {"kind": "...", "message": "..."}}`, pretty-printed like the reports.
pub fn error_json(f: &Failure) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "error": f })).expect("errors serialise")
}

/// Reports a command-line parsing error: help and version print as clap does (exit 0);
/// anything else is a usage error, exit 2, with the error object on stdout if `--json` is
/// among the arguments.
pub fn usage(e: clap::Error, json: bool) -> i32 {
    use clap::error::ErrorKind as C;
    if matches!(e.kind(), C::DisplayHelp | C::DisplayVersion) {
        let _ = e.print();
        return 0;
    }
    if json {
        // The error without clap's usage lines and tips, on one line.
        let text = e.render().to_string();
        let what = text
            .split("\nUsage:")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("tip:"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let first = what.trim_start_matches("error: ").to_string();
        println!(
            "{}",
            error_json(&Failure {
                kind: Kind::Usage,
                message: format!("{first} (see `odt --help`)"),
            })
        );
    }
    let _ = e.print();
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_is_in_the_table() {
        let all = [
            Kind::WrongCode,
            Kind::Unauthenticated,
            Kind::Locked,
            Kind::NotSealed,
            Kind::BadRequest,
            Kind::NotFound,
            Kind::Busy,
            Kind::Failed,
            Kind::Unreachable,
            Kind::FingerprintMismatch,
            Kind::Protocol,
            Kind::Usage,
            Kind::NoJob,
            Kind::Damaged,
            Kind::SealBroken,
            Kind::Conflict,
        ];
        for k in all {
            assert!(
                EXIT_CODES.contains(&format!("\n  {}  ", k.exit_code())),
                "{k:?}"
            );
        }
    }

    #[test]
    fn library_errors_map_to_kinds_through_context() {
        let e = anyhow::Error::from(odt_store::Error::from(FormatError::DeviceSet("x".into())))
            .context("opening the devices");
        assert_eq!(classify(&e).kind, Kind::DeviceSet);
        let e = anyhow::Error::from(EraseError::Refused("no receipt".into()));
        assert_eq!(classify(&e).kind.exit_code(), 8);
        let e = anyhow::anyhow!("plain");
        assert_eq!(
            classify(&e),
            Failure {
                kind: Kind::Failed,
                message: "plain".into()
            }
        );
        assert_eq!(
            error_json(&Failure {
                kind: Kind::NoJob,
                message: "m".into()
            })
            .replace([' ', '\n'], ""),
            r#"{"error":{"kind":"no-job","message":"m"}}"#
        );
    }
}
