//! The ingest's own files in `DATASTORE/.odt-ingest`: small state files written
//! atomically, logs appended to, and what the temporaries of an interrupted run hold.

use std::fs::File;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Datastore, TMP_DIR, dir_flags, io_err};
use crate::ingest::error::IngestError;
use crate::ingest::plan::STATE_DIR;

impl Datastore {
    /// Bytes held by the temporaries an interrupted run left (freed by
    /// [`Datastore::prepare`]).
    pub fn temporaries_size(&self) -> u64 {
        let Some(state) = &self.state else { return 0 };
        let Ok(tmp) = rustix::fs::openat(state, TMP_DIR, dir_flags(), Mode::empty()) else {
            return 0;
        };
        let Ok(mut dir) = rustix::fs::Dir::read_from(&tmp) else {
            return 0;
        };
        let mut bytes = 0u64;
        while let Some(Ok(entry)) = dir.read() {
            if let Ok(st) = rustix::fs::statat(&tmp, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                && FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
            {
                bytes = bytes.saturating_add(st.st_blocks as u64 * 512);
            }
        }
        bytes
    }

    /// Writes a small file in the state directory atomically (temp, fsync, rename, fsync).
    pub fn write_state_file(&self, name: &str, bytes: &[u8]) -> Result<(), IngestError> {
        use std::io::Write;
        let shown = format!("{}/{STATE_DIR}/{name}", self.path.display());
        let tmp = format!(".{name}.tmp");
        let fd = rustix::fs::openat(
            self.state_fd(),
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err("create", shown.clone(), e))?;
        let mut f = File::from(fd);
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| IngestError::Datastore {
                op: "write",
                path: shown.clone(),
                source: e,
            })?;
        rustix::fs::renameat(self.state_fd(), tmp.as_str(), self.state_fd(), name)
            .map_err(|e| io_err("rename", shown.clone(), e))?;
        rustix::fs::fsync(self.state_fd()).map_err(|e| io_err("fsync", shown, e))
    }

    /// Opens a file of the state directory for appending (created if missing).
    pub fn append_state_file(&self, name: &str) -> Result<File, IngestError> {
        let fd = rustix::fs::openat(
            self.state_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| {
            io_err(
                "open",
                format!("{}/{STATE_DIR}/{name}", self.path.display()),
                e,
            )
        })?;
        Ok(File::from(fd))
    }

    /// Reads a file of the state directory; `None` if it does not exist.
    pub fn read_state_file(&self, name: &str) -> Result<Option<Vec<u8>>, IngestError> {
        use std::io::Read;
        let shown = format!("{}/{STATE_DIR}/{name}", self.path.display());
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let fd = match rustix::fs::openat(
            state,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err("open", shown, e)),
        };
        let mut v = Vec::new();
        File::from(fd)
            .read_to_end(&mut v)
            .map_err(|e| IngestError::Datastore {
                op: "read",
                path: shown,
                source: e,
            })?;
        Ok(Some(v))
    }
}
