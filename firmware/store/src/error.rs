//! Errors of the store, in the rustic_core style: each layer has its own kind of error
//! ([`DeviceError`], [`KeyError`], [`FormatError`], [`NamespaceError`], [`StoreError`],
//! [`TripError`]), and one public [`Error`] carries any of them ([`Error::kind`]).
//!
//! A message says what failed, where and, when it helps, what to do. It never repeats its
//! cause: the cause is the error's [`source`](std::error::Error::source), and whoever
//! prints an error prints its chain ([`one_line`]).

use std::path::{Path, PathBuf};

/// Result alias used throughout the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Anything that can go wrong in the store: one of the layers' error kinds, boxed (a
/// `Result` stays one word wider than its value).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<ErrorKind>);

/// Which layer failed, and how.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Positional I/O on a device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Keys: unwrapping, wrapping, unlock codes, identities.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// What a device holds is not what the format says.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A namespace operation does not apply (NFS status codes map from these).
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// The store refuses or cannot finish a change, or a file's content is damaged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A job file, provisioning, the seal or the ingest receipt.
    #[error(transparent)]
    Trip(#[from] TripError),
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// What went wrong, by value (to take its fields).
    pub fn into_kind(self) -> ErrorKind {
        *self.0
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error(Box::new(kind))
    }
}

macro_rules! from_kind {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error(Box::new(ErrorKind::from(e)))
            }
        }
    )*};
}
from_kind!(
    DeviceError,
    KeyError,
    FormatError,
    NamespaceError,
    StoreError,
    TripError
);

// ----- the kinds, bottom layer first ---------------------------------------------------

/// What can go wrong with a device itself.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An I/O call on a device failed.
    #[error("{op} failed on {path} at byte {offset}")]
    Io {
        /// The call (`read`, `write`, `fdatasync`, ...).
        op: &'static str,
        /// The device.
        path: PathBuf,
        /// Where on the device.
        offset: u64,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A device could not be opened or created.
    #[error("cannot open device {path}")]
    Open {
        /// The device.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A device file to provision does not exist and no size was given to create it.
    #[error("device {path} does not exist; give --size to create a disk-image file")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// A read past the end of the device (an address from damaged metadata).
    #[error("corrupt address on {path}: {len} bytes at byte {offset} pass the device end ({size})")]
    ReadPastEnd {
        /// The device.
        path: PathBuf,
        /// Where the read began.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The device's size.
        size: u64,
    },
    /// A write past the end of the device: it is full.
    #[error("no space left: a write of {len} bytes at byte {offset} passes the end of {path}")]
    WritePastEnd {
        /// The device.
        path: PathBuf,
        /// Where the write began.
        offset: u64,
        /// Bytes to write.
        len: usize,
    },
}

impl DeviceError {
    /// An I/O error of `op` on `path` at `offset`.
    pub fn io(op: &'static str, path: &Path, offset: u64, source: std::io::Error) -> Error {
        DeviceError::Io {
            op,
            path: path.to_path_buf(),
            offset,
            source,
        }
        .into()
    }

    /// `path` cannot be opened.
    pub fn open(path: &Path, source: std::io::Error) -> Error {
        DeviceError::Open {
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

/// What can go wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key could not be unwrapped with what the user gave, or what was given is not a key.
    #[error("wrong key: {0}")]
    Wrong(String),
    /// The ingest identity does not open the device's keys.
    #[error(
        "wrong key: the ingest identity does not open this device's keys; is this the job the \
         device was provisioned for?"
    )]
    WrongIdentity {
        /// What age said.
        #[source]
        source: age::DecryptError,
    },
    /// The control API's TLS identity could not be made, or a certificate fingerprint is
    /// malformed.
    #[error("{0}")]
    Tls(String),
    /// The keys could not be wrapped.
    #[error("cannot wrap the keys to {to}")]
    Wrap {
        /// `the ingest recipient` or `the unlock code`.
        to: &'static str,
        /// What age said.
        #[source]
        source: age::EncryptError,
    },
}

impl KeyError {
    /// Whether the user gave the wrong key or code (as opposed to a failure to wrap).
    pub fn is_wrong_key(&self) -> bool {
        matches!(self, KeyError::Wrong(_) | KeyError::WrongIdentity { .. })
    }
}

/// What a device holds is not what the format says.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The device does not carry an ODT superblock (or a foreign one).
    #[error("{path} is not an ODT appliance device: {why}")]
    NotADevice {
        /// The device.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// The device is smaller than its superblock says: truncated, or the wrong device.
    #[error(
        "{path} is truncated: the superblock says {expected} bytes but the device has {actual}; \
         attach the whole device"
    )]
    Truncated {
        /// The device.
        path: PathBuf,
        /// Bytes the superblock says.
        expected: u64,
        /// Bytes the device has.
        actual: u64,
    },
    /// The devices given do not form one complete set.
    #[error("device set problem: {0}")]
    DeviceSet(String),
    /// The device was crypto-erased.
    #[error("{path} was erased: its keys were destroyed and its data can no longer be read")]
    Erased {
        /// The device.
        path: PathBuf,
    },
    /// Stored bytes failed an integrity check.
    #[error("corrupt {what} on {path} at byte {offset}: {why}")]
    Corrupt {
        /// The structure (`journal batch`, `seal record`, ...).
        what: &'static str,
        /// The device.
        path: PathBuf,
        /// Where on the device.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
}

impl FormatError {
    /// A `Corrupt` error.
    pub fn corrupt(what: &'static str, path: &Path, offset: u64, why: impl Into<String>) -> Error {
        FormatError::Corrupt {
            what,
            path: path.to_path_buf(),
            offset,
            why: why.into(),
        }
        .into()
    }
}

/// Why a namespace operation does not apply (the appliance answers each with its NFS status).
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// No entry of that name or id.
    #[error("no such file or directory")]
    NotFound,
    /// The name is taken.
    #[error("file exists")]
    Exists,
    /// A directory was expected.
    #[error("not a directory")]
    NotDir,
    /// Something other than a directory was expected.
    #[error("is a directory")]
    IsDir,
    /// The directory to remove has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// A name a client may not use.
    #[error("invalid name {name:?}: {why}")]
    InvalidName {
        /// The name, printable.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A name longer than [`MAX_NAME`].
    #[error("name too long ({0} bytes, at most 255)")]
    NameTooLong(usize),
    /// An operation that makes no sense for this entry.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A journaled op that contradicts the ops before it (found on replay).
    #[error("format error: {0}")]
    Inconsistent(String),
}

/// Why the store refuses a change or cannot serve a file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store has been sealed (or was opened read-only): nothing may change.
    #[error("the store is sealed and read-only")]
    ReadOnly,
    /// No space left on the data devices or in the metadata journal.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// A file's content is damaged: names the byte range that cannot be served.
    #[error("file {file} is damaged in bytes {start}..{end}: {why}")]
    Damaged {
        /// Path of the file from the root.
        file: String,
        /// First damaged byte.
        start: u64,
        /// End of the damaged range (exclusive).
        end: u64,
        /// What is wrong with the record behind it.
        why: String,
    },
    /// An earlier group commit failed: the store stopped accepting writes (the state on the
    /// devices is the last durable one).
    #[error(
        "an earlier commit failed on {path} and the store stopped accepting writes ({why}); \
         restart the appliance to recover the last durable state"
    )]
    Stopped {
        /// Device 0 of the set.
        path: PathBuf,
        /// What failed then.
        why: String,
    },
    /// An argument the store cannot take.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A file could not be read: a device or format error met while reading it.
    #[error("cannot read file {file} at byte {offset}")]
    Unreadable {
        /// Path of the file from the root.
        file: String,
        /// Where in the file the read began.
        offset: u64,
        /// What failed.
        #[source]
        source: Error,
    },
    /// A file would be (or is) larger than the device set can hold. Such a file could only
    /// be mostly holes, and hashing it for the seal would take as long as its apparent size.
    #[error(
        "file {file} is too large: {size} bytes, more than the {limit} bytes the device set \
         can hold (no file may be larger than the store's capacity); truncate or remove it"
    )]
    FileTooLarge {
        /// Path of the file from the root.
        file: String,
        /// The size it has or asked for.
        size: u64,
        /// The largest size allowed: the store's capacity.
        limit: u64,
    },
}

/// What can go wrong with a job file, provisioning, the seal or the ingest receipt.
#[derive(Debug, thiserror::Error)]
pub enum TripError {
    /// A file of the job (job file, identity) could not be read.
    #[error("cannot read the {what} {path} (is its folder a job made by `odt job new`?)")]
    ReadFile {
        /// `job file` or `ingest identity`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file of the job could not be written.
    #[error("cannot write the {what} {path}")]
    WriteFile {
        /// `job file`, `ingest identity`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The job file does not parse, or a field of it is malformed.
    #[error("the job file {path} is malformed: {why}")]
    BadJob {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The job records no device set yet.
    #[error("the job has no provisioned devices (run `odt provision`)")]
    NotProvisioned,
    /// A device is too small to provision.
    #[error("no space left: {0}")]
    TooSmall(String),
    /// A device to provision is smaller than the metadata and one segment.
    #[error(
        "device too small: {path} has {size} bytes, needs at least {needed} (the metadata and \
         one segment); give a larger device, or a smaller --segment-size or --journal-size"
    )]
    DeviceTooSmall {
        /// The device.
        path: PathBuf,
        /// Its size in bytes (as it would be after `--size`).
        size: u64,
        /// The smallest size that holds a set.
        needed: u64,
    },
    /// A device to provision holds an ODT set or other data; nothing was written.
    #[error(
        "refusing to provision {path}: it holds {found}; nothing was written. Check the device \
         path; to destroy what is there, `odt erase` it (an ODT set) or pass --force"
    )]
    NotBlank {
        /// The device.
        path: PathBuf,
        /// What is on it ([`crate::trip::provision::Found::describe`]).
        found: String,
    },
    /// An argument or a state the operation cannot take.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// An error and its causes on one line (`what: cause: cause`), for the binaries' last word
/// and for reports and logs that keep an error as text.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_each_cause_once() {
        let open: Error = DeviceError::Open {
            path: "/dev/x".into(),
            source: std::io::Error::from_raw_os_error(28),
        }
        .into();
        let line = one_line(&open);
        assert_eq!(line.matches("No space left on device").count(), 1, "{line}");
        assert!(line.starts_with("cannot open device /dev/x"), "{line}");
        assert!(matches!(
            open.kind(),
            ErrorKind::Device(DeviceError::Open { .. })
        ));

        /// A wrapper that does not quote its cause.
        #[derive(Debug, thiserror::Error)]
        #[error("provisioning failed")]
        struct Outer(#[source] Error);
        let line = one_line(&Outer(open));
        assert!(
            line.starts_with("provisioning failed: cannot open device /dev/x"),
            "{line}"
        );
        assert_eq!(line.matches("No space left").count(), 1, "{line}");
    }

    #[test]
    fn no_message_quotes_its_cause() {
        // Every kind with a source: its message alone must not hold the cause's text.
        let io = || std::io::Error::other("the disk caught fire");
        let errors: Vec<Error> = vec![
            DeviceError::Open {
                path: "/x".into(),
                source: io(),
            }
            .into(),
            DeviceError::Io {
                op: "read",
                path: "/x".into(),
                offset: 7,
                source: io(),
            }
            .into(),
            TripError::ReadFile {
                what: "job file",
                path: "/x/job.toml".into(),
                source: io(),
            }
            .into(),
            TripError::WriteFile {
                what: "job file",
                path: "/x/job.toml".into(),
                source: io(),
            }
            .into(),
        ];
        for e in errors {
            assert!(!e.to_string().contains("caught fire"), "{e}");
            assert!(one_line(&e).ends_with(": the disk caught fire"), "{e}");
        }
    }
}
