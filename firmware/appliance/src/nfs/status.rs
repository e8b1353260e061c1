//! How store errors reach NFS clients: the `nfsstat3` code of each, and which of them are
//! routine answers (a failed LOOKUP, a taken name) rather than problems worth a log line.

use nfsserve::nfs::nfsstat3;
use odt_store::Error;

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
    match e {
        Error::NotFound => match subject {
            Subject::Object => NFS3ERR_STALE,
            Subject::Name => NFS3ERR_NOENT,
        },
        Error::Exists => NFS3ERR_EXIST,
        Error::NotDir => NFS3ERR_NOTDIR,
        Error::IsDir => NFS3ERR_ISDIR,
        Error::NotEmpty => NFS3ERR_NOTEMPTY,
        Error::InvalidName { .. } => NFS3ERR_INVAL,
        Error::NameTooLong(_) => NFS3ERR_NAMETOOLONG,
        Error::Invalid(_) => NFS3ERR_INVAL,
        Error::NoSpace(_) => NFS3ERR_NOSPC,
        Error::ReadOnly => NFS3ERR_ROFS,
        Error::Locked | Error::WrongKey(_) => NFS3ERR_ACCES,
        Error::Io { .. }
        | Error::Open { .. }
        | Error::Corrupt { .. }
        | Error::Damaged { .. }
        | Error::Truncated { .. }
        | Error::NotADevice { .. }
        | Error::DeviceSet(_)
        | Error::Erased { .. }
        | Error::Format(_) => NFS3ERR_IO,
    }
}

/// True for answers that are part of normal client behaviour and need no log line: probing
/// a name that does not exist, creating one that does, removing a non-empty directory.
pub fn is_routine(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound | Error::Exists | Error::NotEmpty | Error::NotDir | Error::IsDir
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: Error, s: Subject) -> u32 {
        status_of(&e, s) as u32
    }

    #[test]
    fn codes() {
        use nfsstat3::*;
        assert_eq!(code(Error::NotFound, Subject::Name), NFS3ERR_NOENT as u32);
        assert_eq!(code(Error::NotFound, Subject::Object), NFS3ERR_STALE as u32);
        assert_eq!(
            code(Error::NoSpace("x".into()), Subject::Object),
            NFS3ERR_NOSPC as u32
        );
        assert_eq!(code(Error::ReadOnly, Subject::Name), NFS3ERR_ROFS as u32);
        assert_eq!(
            code(Error::NameTooLong(300), Subject::Name),
            NFS3ERR_NAMETOOLONG as u32
        );
        assert_eq!(code(Error::Locked, Subject::Object), NFS3ERR_ACCES as u32);
        assert_eq!(
            code(Error::NotEmpty, Subject::Name),
            NFS3ERR_NOTEMPTY as u32
        );
        let damaged = Error::Damaged {
            file: "a/b".into(),
            start: 0,
            end: 1,
            why: "tag".into(),
        };
        assert_eq!(code(damaged, Subject::Object), NFS3ERR_IO as u32);
        assert!(is_routine(&Error::Exists));
        assert!(!is_routine(&Error::NoSpace("x".into())));
    }
}
