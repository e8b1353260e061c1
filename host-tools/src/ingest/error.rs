//! Errors of the ingest: each says what failed, where, and what to do.

use crate::output::bytes as human;

/// Everything that stops an ingest. (Damaged files do not: they are quarantined and
/// reported.)
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Opening or reading the devices failed (erased, wrong key, wrong job, damage that
    /// prevents reading the metadata).
    #[error(transparent)]
    Store(#[from] odt_store::Error),
    /// The job directory does not match the devices.
    #[error("{0}")]
    Job(String),
    /// The seal does not check out.
    #[error("{0}")]
    Seal(String),
    /// A file-system call on the datastore failed.
    #[error("cannot {op} {path} (fix the cause and run the same command again to resume)")]
    Datastore {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A path component in the datastore is a symlink or a file where a directory belongs.
    #[error(
        "{path} is a symlink or not a directory; the ingest never follows symlinks inside the \
         datastore: remove it (or choose an empty datastore) and run again"
    )]
    NotADirectory { path: String },
    /// Something already in the datastore blocks an entry.
    #[error("cannot write {path}: {why}; move it away and run again")]
    Conflict { path: String, why: String },
    /// The datastore's file system has less free space than the files still to ingest.
    #[error(
        "not enough space in {path}: the files still to ingest need {} and its file system has \
         {} free; free {} or choose another --to (or pass --skip-space-check if the file system \
         compresses or deduplicates)",
        human(*needed), human(*available), human(needed - available)
    )]
    NoSpace {
        path: String,
        needed: u64,
        available: u64,
    },
    /// Another ingest holds the datastore.
    #[error(
        "another `odt ingest` is writing into {path} (its lock is held); wait for it to finish"
    )]
    Busy { path: String },
    /// The datastore's state belongs to another job or is unreadable.
    #[error("{0}")]
    State(String),
}
