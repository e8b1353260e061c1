//! How store errors reach NFS clients: the `nfsstat3` code of each, and which of them are
//! routine answers (a failed LOOKUP, a taken name) rather than problems worth a log line.

use nfsserve::nfs::nfsstat3;
use odt_store::Error;
use odt_store::error::{DeviceError, ErrorKind, NamespaceError, StoreError};

/// Where an error came from: the object a request names by handle, or a name inside a
/// directory. A missing *object* means its handle outlived the file (STALE); a missing
/// *name* is an ordinary "no such file" (NOENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The file or directory named by the request's handle.
    Object,
    /// A name looked up or created in a directory.
    Name,
}

/// The status a client gets for a store error.
pub fn status_of(e: &Error, subject: Subject) -> nfsstat3 {
    use nfsstat3::*;
    match e.kind() {
        ErrorKind::Namespace(n) => match n {
            NamespaceError::NotFound => match subject {
                Subject::Object => NFS3ERR_STALE,
                Subject::Name => NFS3ERR_NOENT,
            },
            NamespaceError::Exists => NFS3ERR_EXIST,
            NamespaceError::NotDir => NFS3ERR_NOTDIR,
            NamespaceError::IsDir => NFS3ERR_ISDIR,
            NamespaceError::NotEmpty => NFS3ERR_NOTEMPTY,
            NamespaceError::InvalidName { .. } | NamespaceError::Invalid(_) => NFS3ERR_INVAL,
            NamespaceError::NameTooLong(_) => NFS3ERR_NAMETOOLONG,
            NamespaceError::Inconsistent(_) => NFS3ERR_IO,
        },
        ErrorKind::Store(s) => match s {
            StoreError::Invalid(_) => NFS3ERR_INVAL,
            StoreError::NoSpace(_) => NFS3ERR_NOSPC,
            StoreError::ReadOnly => NFS3ERR_ROFS,
            StoreError::FileTooLarge { .. } => NFS3ERR_FBIG,
            StoreError::Damaged { .. }
            | StoreError::Stopped { .. }
            | StoreError::Unreadable { .. } => NFS3ERR_IO,
        },
        ErrorKind::Device(DeviceError::WritePastEnd { .. }) => NFS3ERR_NOSPC,
        ErrorKind::Key(_) => NFS3ERR_ACCES,
        _ => NFS3ERR_IO,
    }
}

/// True for answers that are part of normal client behaviour and need no log line: probing
/// a name that does not exist, creating one that does, removing a non-empty directory.
pub fn is_routine(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Namespace(
            NamespaceError::NotFound
                | NamespaceError::Exists
                | NamespaceError::NotEmpty
                | NamespaceError::NotDir
                | NamespaceError::IsDir
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use odt_store::error::KeyError;

    fn code(e: impl Into<Error>, s: Subject) -> u32 {
        status_of(&e.into(), s) as u32
    }

    #[test]
    fn codes() {
        use nfsstat3::*;
        assert_eq!(
            code(NamespaceError::NotFound, Subject::Name),
            NFS3ERR_NOENT as u32
        );
        assert_eq!(
            code(NamespaceError::NotFound, Subject::Object),
            NFS3ERR_STALE as u32
        );
        assert_eq!(
            code(StoreError::NoSpace("x".into()), Subject::Object),
            NFS3ERR_NOSPC as u32
        );
        assert_eq!(
            code(
                StoreError::FileTooLarge {
                    file: "a".into(),
                    size: 2,
                    limit: 1
                },
                Subject::Object
            ),
            NFS3ERR_FBIG as u32
        );
        assert_eq!(
            code(StoreError::ReadOnly, Subject::Name),
            NFS3ERR_ROFS as u32
        );
        assert_eq!(
            code(NamespaceError::NameTooLong(300), Subject::Name),
            NFS3ERR_NAMETOOLONG as u32
        );
        assert_eq!(
            code(KeyError::Wrong("x".into()), Subject::Object),
            NFS3ERR_ACCES as u32
        );
        assert_eq!(
            code(NamespaceError::NotEmpty, Subject::Name),
            NFS3ERR_NOTEMPTY as u32
        );
        let damaged = StoreError::Damaged {
            file: "a/b".into(),
            start: 0,
            end: 1,
            why: "tag".into(),
        };
        assert_eq!(code(damaged, Subject::Object), NFS3ERR_IO as u32);
        assert!(is_routine(&NamespaceError::Exists.into()));
        assert!(!is_routine(&StoreError::NoSpace("x".into()).into()));
    }
}
