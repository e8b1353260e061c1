//! Errors of the store. Each says what failed, where, and (when it helps) what to do.

use std::path::PathBuf;

/// Result alias used throughout the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call on a device failed.
    #[error("{op} on {path} at byte {offset}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// A device could not be opened or created.
    #[error("cannot open device {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The device does not carry an ODT superblock (or a foreign one).
    #[error("{path} is not an ODT appliance device: {why}")]
    NotADevice { path: PathBuf, why: String },
    /// The device is smaller than its superblock says: it was truncated or is the wrong device.
    #[error(
        "{path} is truncated: the superblock says {expected} bytes but the device has {actual}; \
         attach the whole device"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The devices given do not form one complete set.
    #[error("device set problem: {0}")]
    DeviceSet(String),
    /// The device was crypto-erased.
    #[error("{path} was erased: its keys were destroyed and its data can no longer be read")]
    Erased { path: PathBuf },
    /// A key could not be unwrapped with what the user gave.
    #[error("wrong key: {0}")]
    WrongKey(String),
    /// The store is locked: no data key yet.
    #[error("the appliance is locked: unlock it with the customer unlock code first")]
    Locked,
    /// The store has been sealed: nothing may change.
    #[error("the store is sealed and read-only")]
    ReadOnly,
    /// No space left on the data devices or in the metadata journal.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// Stored bytes failed an integrity check.
    #[error("corrupt {what} on {path} at byte {offset}: {why}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        offset: u64,
        why: String,
    },
    /// A file's content is damaged: names the byte range that cannot be served.
    #[error("file {file} is damaged in bytes {start}..{end}: {why}")]
    Damaged {
        file: String,
        start: u64,
        end: u64,
        why: String,
    },
    /// Namespace errors (mapped to NFS status codes by the appliance).
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("name too long ({0} bytes, at most 255)")]
    NameTooLong(usize),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Encoding or decoding of a structure failed.
    #[error("format error: {0}")]
    Format(String),
}

impl Error {
    /// Wraps an I/O error with the operation, device path and offset.
    pub fn io(
        op: &'static str,
        path: &std::path::Path,
        offset: u64,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            offset,
            source,
        }
    }

    /// Builds a `Corrupt` error.
    pub fn corrupt(
        what: &'static str,
        path: &std::path::Path,
        offset: u64,
        why: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            what,
            path: path.to_path_buf(),
            offset,
            why: why.into(),
        }
    }
}

/// An error and its causes on one line (`what: cause: cause`), for the binaries' last word.
///
/// Many messages here quote their cause (`cannot open device X: <io error>`) so that they
/// read whole when shown alone (in reports, logs, JSON), and they also chain it as
/// `source()`. Printing such a chain with anyhow's `{:#}` would say the cause twice; this
/// leaves out a cause whose text the line already holds.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_a_quoted_cause_once_and_keeps_the_others() {
        let quoted = Error::Open {
            path: "/dev/x".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let line = one_line(&quoted);
        assert_eq!(line.matches("No space left on device").count(), 1, "{line}");
        assert!(line.starts_with("cannot open device /dev/x: "), "{line}");

        /// A wrapper that does not quote its cause.
        #[derive(Debug, thiserror::Error)]
        #[error("provisioning failed")]
        struct Outer(#[source] Error);
        let line = one_line(&Outer(quoted));
        assert!(
            line.starts_with("provisioning failed: cannot open device /dev/x: "),
            "{line}"
        );
        assert_eq!(line.matches("No space left").count(), 1, "{line}");
    }
}
