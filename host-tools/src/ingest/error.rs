//! Errors of the ingest: each says what failed, where, and what to do.

use crate::output::bytes as human;

fn conflict_list(c: &[super::conflicts::Conflict]) -> String {
    let lines: Vec<String> = c
        .iter()
        .map(|c| {
            format!(
                "  {} ({} there, the device has a {})",
                c.path, c.found, c.entry
            )
        })
        .collect();
    lines.join("\n")
}

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
        /// What was being done (`create`, `rename`, ...).
        op: &'static str,
        /// The datastore path.
        path: String,
        #[source]
        /// Why.
        source: std::io::Error,
    },
    /// A path component in the datastore is a symlink or a file where a directory belongs.
    #[error(
        "{path} is a symlink or not a directory; the ingest never follows symlinks inside the \
         datastore: remove it (or choose an empty datastore) and run again"
    )]
    NotADirectory {
        /// The path component.
        path: String,
    },
    /// Something already in the datastore blocks an entry.
    #[error("cannot write {path}: {why}; move it away and run again")]
    Conflict {
        /// The datastore path.
        path: String,
        /// What is there.
        why: String,
    },
    /// The datastore's file system has less free space than the files still to ingest.
    #[error(
        "not enough space in {path}: the files still to ingest need {} and its file system has \
         {} free; free {} or choose another --to (or pass --skip-space-check if the file system \
         compresses or deduplicates)",
        human(*needed), human(*available), human(needed - available)
    )]
    NoSpace {
        /// The datastore.
        path: String,
        /// Bytes the files still to ingest need.
        needed: u64,
        /// Bytes free on its file system.
        available: u64,
    },
    /// Another ingest holds the datastore.
    #[error(
        "another `odt ingest` is writing into {path} (its lock is held); wait for it to finish"
    )]
    Busy {
        /// The datastore.
        path: String,
    },
    /// Paths of the plan already hold things this ingest did not write; nothing was
    /// written (`--on-conflict` was not given).
    #[error(
        "refusing to ingest into {datastore}: {} path(s) there already hold something this \
         ingest did not write; no file was written:\n{}\nMove them away or choose an \
         empty --to; or pass --on-conflict skip (leave them, do not write these entries) or \
         --on-conflict rename (write the entries under free names beside them)",
        conflicts.len(),
        conflict_list(conflicts)
    )]
    Conflicts {
        /// The datastore.
        datastore: String,
        /// The paths and what is there.
        conflicts: Vec<super::conflicts::Conflict>,
    },
    /// The datastore is inside the job folder or a device's folder, or holds one.
    #[error(
        "refusing to ingest into {datastore}: {why}; the ingest could replace the job's keys \
         or a device. Choose a datastore elsewhere; nothing was written"
    )]
    UnsafeDatastore {
        /// The datastore, as given.
        datastore: String,
        /// Which folder it is in or holds.
        why: String,
    },
    /// The datastore's state belongs to another job or is unreadable.
    #[error("{0}")]
    State(String),
}
