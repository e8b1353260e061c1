//! Writing into DATASTORE_DIR without ever leaving it.
//!
//! Discipline: the root is opened once; every other directory is reached one safe component
//! at a time with `openat(O_DIRECTORY | O_NOFOLLOW)`, and every entry is created with an
//! `*at` call on such a descriptor. A symlink met on the way (planted by an earlier entry,
//! by a person, or by a race) makes the call fail rather than be followed. Files are
//! written under a temporary name in `.odt-ingest/tmp/`, synced, then renamed into place
//! and the directory synced, so a file under its final name is always complete.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;

use super::error::IngestError;
pub use super::temp_file::{AlignedBuf, DIRECT_ALIGN, Temp};

mod state_files;
use super::plan::{STATE_DIR, rel_display};
use odt_store::format::journal::Time;

/// Subdirectory of the state directory holding files being written.
const TMP_DIR: &str = "tmp";
/// Lock file that keeps two ingests out of one datastore.
const LOCK_FILE: &str = "lock";

/// The open datastore: first only looked at ([`Datastore::inspect`] creates nothing, so that
/// an ingest refused for conflicts or space leaves the datastore as it was), then made ready
/// to write into ([`Datastore::prepare`]).
pub struct Datastore {
    path: PathBuf,
    /// The datastore directory; `None` while it does not exist yet.
    root: Option<OwnedFd>,
    /// `.odt-ingest`; `None` until an ingest needed it.
    state: Option<OwnedFd>,
    /// `.odt-ingest/tmp`; `None` until prepared.
    tmp: Option<OwnedFd>,
    /// The held ingest lock (from the time `.odt-ingest/lock` exists).
    _lock: Option<OwnedFd>,
}

fn io_err(op: &'static str, path: String, e: Errno) -> IngestError {
    IngestError::Datastore {
        op,
        path,
        source: std::io::Error::from(e),
    }
}

/// The nearest directory above `path` that exists (`.` for a relative path's start).
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// What is at a name in a directory, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// File, directory, symlink, ...
    pub file_type: FileType,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub mtime: Time,
}

fn to_timespec(t: Time) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.min(999_999_999) as _,
    }
}

fn timestamps(atime: Time, mtime: Time) -> Timestamps {
    Timestamps {
        last_access: to_timespec(atime),
        last_modification: to_timespec(mtime),
    }
}

impl Datastore {
    /// Opens the datastore and prepares it for writing ([`Datastore::inspect`] then
    /// [`Datastore::prepare`]).
    pub fn open(path: &Path) -> Result<Datastore, IngestError> {
        let mut ds = Self::inspect(path)?;
        ds.prepare()?;
        Ok(ds)
    }

    /// Opens what exists of the datastore to look at, creating nothing: the directory (if
    /// it exists) and its state directory (if an ingest ran there), whose lock it takes.
    /// Fails if another ingest holds that lock.
    pub fn inspect(path: &Path) -> Result<Datastore, IngestError> {
        let shown = path.display().to_string();
        // The root itself is the operator's choice: following a symlink there is fine.
        let root = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err("open", shown, e)),
        };
        let mut ds = Datastore {
            path: path.to_path_buf(),
            root,
            state: None,
            tmp: None,
            _lock: None,
        };
        let Some(root) = &ds.root else {
            return Ok(ds);
        };
        ds.state = match rustix::fs::openat(root, STATE_DIR, dir_flags(), Mode::empty()) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err("open", format!("{shown}/{STATE_DIR}"), e)),
        };
        if let Some(state) = &ds.state {
            match rustix::fs::openat(
                state,
                LOCK_FILE,
                OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(lock) => ds._lock = Some(Self::lock(lock, &shown)?),
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(io_err(
                        "open lock",
                        format!("{shown}/{STATE_DIR}/{LOCK_FILE}"),
                        e,
                    ));
                }
            }
        }
        Ok(ds)
    }

    fn lock(fd: OwnedFd, shown: &str) -> Result<OwnedFd, IngestError> {
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| IngestError::Busy {
                path: shown.to_string(),
            },
        )?;
        Ok(fd)
    }

    /// Creates what writing needs (the directory, its state directory, the lock, the
    /// temporary directory) and removes what an interrupted run left half-written. Another
    /// ingest that started here since [`Datastore::inspect`] makes this fail (Busy): what
    /// was looked at may have changed.
    pub fn prepare(&mut self) -> Result<(), IngestError> {
        let shown = self.path.display().to_string();
        if self.root.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| IngestError::Datastore {
                    op: "create directory",
                    path: parent.display().to_string(),
                    source: e,
                })?;
            }
            match std::fs::create_dir(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(IngestError::Busy { path: shown });
                }
                Err(e) => {
                    return Err(IngestError::Datastore {
                        op: "create directory",
                        path: shown,
                        source: e,
                    });
                }
            }
            let root = rustix::fs::open(
                &self.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("open", shown.clone(), e))?;
            self.root = Some(root);
        }
        let root = self.root.as_ref().expect("opened above");
        if self.state.is_none() {
            // Created here, not found: an ingest that created it since the inspection may
            // have written what the inspection did not see.
            match rustix::fs::mkdirat(root, STATE_DIR, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Err(IngestError::Busy { path: shown }),
                Err(e) => {
                    return Err(io_err(
                        "create state directory",
                        format!("{shown}/{STATE_DIR}"),
                        e,
                    ));
                }
            }
            let state = rustix::fs::openat(root, STATE_DIR, dir_flags(), Mode::empty())
                .map_err(|e| io_err("open state directory", format!("{shown}/{STATE_DIR}"), e))?;
            self.state = Some(state);
        }
        let state = self.state.as_ref().expect("opened above");
        if self._lock.is_none() {
            let lock = rustix::fs::openat(
                state,
                LOCK_FILE,
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| io_err("open lock", format!("{shown}/{STATE_DIR}/{LOCK_FILE}"), e))?;
            self._lock = Some(Self::lock(lock, &shown)?);
        }
        let tmp = Self::mkdir_open(state, OsStr::new(TMP_DIR), 0o700)
            .map_err(|e| io_err("open", format!("{shown}/{STATE_DIR}/{TMP_DIR}"), e))?;
        self.tmp = Some(tmp);
        self.clear_tmp()
    }

    /// The datastore directory. Panics before [`Datastore::prepare`] if it did not exist:
    /// writing before preparing is a caller bug.
    fn root_fd(&self) -> &OwnedFd {
        self.root
            .as_ref()
            .expect("datastore prepared before writing")
    }

    /// The state directory; panics before [`Datastore::prepare`] (a caller bug).
    fn state_fd(&self) -> &OwnedFd {
        self.state
            .as_ref()
            .expect("datastore prepared before writing")
    }

    /// The temporary directory; panics before [`Datastore::prepare`] (a caller bug).
    fn tmp_fd(&self) -> &OwnedFd {
        self.tmp
            .as_ref()
            .expect("datastore prepared before writing")
    }

    /// Bytes an unprivileged writer can still put on the datastore's file system.
    pub fn available(&self) -> Result<u64, IngestError> {
        let st = match &self.root {
            Some(root) => rustix::fs::fstatvfs(root),
            // Not created yet: the space is that of the file system it will be created on.
            None => rustix::fs::statvfs(existing_ancestor(&self.path)),
        }
        .map_err(|e| io_err("read the free space of", self.path.display().to_string(), e))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// The datastore's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory, for the state and report files.
    pub fn state_dir(&self) -> &OwnedFd {
        self.state_fd()
    }

    /// Removes what an interrupted run left half-written.
    fn clear_tmp(&self) -> Result<(), IngestError> {
        let shown = format!("{}/{STATE_DIR}/{TMP_DIR}", self.path.display());
        let dup = rustix::fs::openat(self.tmp_fd(), ".", dir_flags(), Mode::empty())
            .map_err(|e| io_err("open", shown.clone(), e))?;
        let mut dir =
            rustix::fs::Dir::read_from(&dup).map_err(|e| io_err("list", shown.clone(), e))?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_err("list", shown.clone(), e))?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(entry.file_name().to_owned());
            }
        }
        for n in names {
            rustix::fs::unlinkat(self.tmp_fd(), n.as_c_str(), AtFlags::empty())
                .map_err(|e| io_err("remove", format!("{shown}/{}", n.to_string_lossy()), e))?;
        }
        Ok(())
    }

    fn mkdir_open(parent: &OwnedFd, name: &OsStr, mode: u32) -> Result<OwnedFd, Errno> {
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        rustix::fs::openat(parent, name, dir_flags(), Mode::empty())
    }

    /// Creates (if needed) and opens the directory at `rel`, one component at a time,
    /// never following a symlink. New directories get mode 0700 until their own mode is
    /// applied at the end.
    pub fn ensure_dir(&self, rel: &[OsString]) -> Result<OwnedFd, IngestError> {
        let mut fd = rustix::io::dup(self.root_fd())
            .map_err(|e| io_err("dup", self.path.display().to_string(), e))?;
        for (k, c) in rel.iter().enumerate() {
            fd = Self::mkdir_open(&fd, c, 0o700).map_err(|e| {
                let path = format!("{}/{}", self.path.display(), rel_display(&rel[..=k]));
                if e == Errno::LOOP || e == Errno::NOTDIR {
                    IngestError::NotADirectory { path }
                } else {
                    io_err("create directory", path, e)
                }
            })?;
        }
        Ok(fd)
    }

    /// Opens the directory at `rel` if it exists (no symlinks followed).
    pub fn open_dir(&self, rel: &[OsString]) -> Result<Option<OwnedFd>, IngestError> {
        let Some(root) = &self.root else {
            return Ok(None);
        };
        let mut fd =
            rustix::io::dup(root).map_err(|e| io_err("dup", self.path.display().to_string(), e))?;
        for (k, c) in rel.iter().enumerate() {
            fd = match rustix::fs::openat(&fd, c.as_os_str(), dir_flags(), Mode::empty()) {
                Ok(f) => f,
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    return Err(IngestError::NotADirectory {
                        path: format!("{}/{}", self.path.display(), rel_display(&rel[..=k])),
                    });
                }
                Err(e) => {
                    return Err(io_err(
                        "open directory",
                        format!("{}/{}", self.path.display(), rel_display(&rel[..=k])),
                        e,
                    ));
                }
            };
        }
        Ok(Some(fd))
    }

    /// What is at `name` in `dir` (not following symlinks), if anything.
    pub fn existing(&self, dir: &OwnedFd, name: &OsStr) -> Option<Existing> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some(Existing {
            file_type: FileType::from_raw_mode(st.st_mode as _),
            size: st.st_size as u64,
            mtime: Time {
                secs: st.st_mtime as i64,
                nanos: st.st_mtime_nsec as u32,
            },
        })
    }

    /// Creates the temporary file for file `id` (truncating an old one) with its final
    /// size (sparse), so that no write extends it.
    pub fn create_temp(&self, id: u64, size: u64) -> Result<Temp, IngestError> {
        let name = format!("{id}.part");
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            self.tmp_fd(),
            name.as_str(),
            flags | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err("create", self.tmp_display(&name), e))?;
        rustix::fs::ftruncate(&fd, size)
            .map_err(|e| io_err("set length of", self.tmp_display(&name), e))?;
        // Buffered, not O_DIRECT: with the writers running beside the decoders, buffered
        // writes whose write-back starts at once (each span) measured faster here than
        // O_DIRECT into the sparse temporary (docs/benchmarks.md, "Ingest (issue 5)").
        // Durability is the fsync before the rename either way.
        let direct = None;
        Ok(Temp {
            name,
            file: File::from(fd),
            direct,
        })
    }

    fn tmp_display(&self, name: &str) -> String {
        format!("{}/{STATE_DIR}/{TMP_DIR}/{name}", self.path.display())
    }

    /// Discards a temporary file.
    pub fn discard_temp(&self, name: &str) {
        let _ = rustix::fs::unlinkat(self.tmp_fd(), name, AtFlags::empty());
    }

    /// Finishes a written temporary file and moves it into place: size, mode, times,
    /// fsync, rename over whatever non-directory is at the final name. The caller makes the
    /// rename durable with [`Datastore::sync_dir`] before it records the file as done
    /// (batched: one directory fsync covers many small files).
    #[allow(clippy::too_many_arguments)]
    pub fn commit_file(
        &self,
        tmp_name: &str,
        file: &File,
        size: u64,
        mode: u32,
        atime: Time,
        mtime: Time,
        rel: &[OsString],
    ) -> Result<(), IngestError> {
        self.seal_temp(tmp_name, file, size, mode, atime, mtime)?;
        self.place_file(tmp_name, file, rel)
    }

    /// First half of [`Datastore::commit_file`]: size, mode and times of a written
    /// temporary, and its write-back started (not waited for), so that a later
    /// [`Datastore::place_file`] of several files finds their data written and one journal
    /// commit covering them all.
    pub fn seal_temp(
        &self,
        tmp_name: &str,
        file: &File,
        size: u64,
        mode: u32,
        atime: Time,
        mtime: Time,
    ) -> Result<(), IngestError> {
        let tmp_shown = || self.tmp_display(tmp_name);
        rustix::fs::ftruncate(file, size).map_err(|e| io_err("set length of", tmp_shown(), e))?;
        // No set-id or sticky bits from a device: plain permission bits only.
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| io_err("chmod", tmp_shown(), e))?;
        rustix::fs::futimens(file, &timestamps(atime, mtime))
            .map_err(|e| io_err("set times of", tmp_shown(), e))?;
        // DONTNEED starts write-back of the dirty pages without waiting (a hint: the fsync
        // in place_file is what makes them durable).
        let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
        Ok(())
    }

    /// Second half of [`Datastore::commit_file`]: fsync, then rename into place.
    pub fn place_file(
        &self,
        tmp_name: &str,
        file: &File,
        rel: &[OsString],
    ) -> Result<(), IngestError> {
        let shown = || format!("{}/{}", self.path.display(), rel_display(rel));
        rustix::fs::fsync(file).map_err(|e| io_err("fsync", self.tmp_display(tmp_name), e))?;
        let (name, parent) = rel.split_last().expect("a file has a name");
        let dir = self.ensure_dir(parent)?;
        if let Some(e) = self.existing(&dir, name)
            && e.file_type == FileType::Directory
        {
            return Err(IngestError::Conflict {
                path: shown(),
                why: "a directory is in the way of a file".into(),
            });
        }
        rustix::fs::renameat(self.tmp_fd(), tmp_name, &dir, name.as_os_str())
            .map_err(|e| io_err("rename into place", shown(), e))
    }

    /// Makes the entries renamed into the directory at `rel` durable (fsync).
    pub fn sync_dir(&self, rel: &[OsString]) -> Result<(), IngestError> {
        let shown = || format!("{}/{}", self.path.display(), rel_display(rel));
        let dir = self.open_dir(rel)?.ok_or_else(|| IngestError::Conflict {
            path: shown(),
            why: "the directory vanished while ingesting".into(),
        })?;
        rustix::fs::fsync(&dir).map_err(|e| io_err("fsync directory", shown(), e))
    }

    /// Creates a symlink (replacing a symlink or file at its name; an equal link is kept).
    pub fn make_symlink(
        &self,
        rel: &[OsString],
        target: &[u8],
        atime: Time,
        mtime: Time,
    ) -> Result<(), IngestError> {
        let shown = || format!("{}/{}", self.path.display(), rel_display(rel));
        let (name, parent) = rel.split_last().expect("a link has a name");
        let dir = self.ensure_dir(parent)?;
        match self.existing(&dir, name) {
            None => {}
            Some(e) if e.file_type == FileType::Directory => {
                return Err(IngestError::Conflict {
                    path: shown(),
                    why: "a directory is in the way of a symlink".into(),
                });
            }
            Some(e) => {
                let same = e.file_type == FileType::Symlink
                    && rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
                        .is_ok_and(|t| t.as_bytes() == target);
                if !same {
                    rustix::fs::unlinkat(&dir, name.as_os_str(), AtFlags::empty())
                        .map_err(|e| io_err("replace", shown(), e))?;
                }
            }
        }
        if self.existing(&dir, name).is_none() {
            rustix::fs::symlinkat(target, &dir, name.as_os_str())
                .map_err(|e| io_err("create symlink", shown(), e))?;
        }
        rustix::fs::utimensat(
            &dir,
            name.as_os_str(),
            &timestamps(atime, mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err("set times of", shown(), e))?;
        rustix::fs::fsync(&dir).map_err(|e| io_err("fsync directory of", shown(), e))?;
        Ok(())
    }

    /// Gives the file written at `target` the further name `rel` (a hard link). A name that
    /// is already that file is kept (a resumed run); a file or symlink there is replaced, as
    /// for symlinks.
    pub fn make_hard_link(&self, rel: &[OsString], target: &[OsString]) -> Result<(), IngestError> {
        let shown = || format!("{}/{}", self.path.display(), rel_display(rel));
        let (name, parent) = rel.split_last().expect("a link has a name");
        let (target_name, target_parent) = target.split_last().expect("a file has a name");
        let dir = self.ensure_dir(parent)?;
        let target_dir = self
            .open_dir(target_parent)?
            .ok_or_else(|| IngestError::Conflict {
                path: shown(),
                why: "the directory of the file it names vanished while ingesting".into(),
            })?;
        let stat = |d: &OwnedFd, n: &OsStr| rustix::fs::statat(d, n, AtFlags::SYMLINK_NOFOLLOW);
        let file = stat(&target_dir, target_name)
            .map_err(|e| io_err("find the file to link to", rel_display(target), e))?;
        match stat(&dir, name) {
            Err(_) => {}
            Ok(st) if st.st_dev == file.st_dev && st.st_ino == file.st_ino => return Ok(()),
            Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory => {
                return Err(IngestError::Conflict {
                    path: shown(),
                    why: "a directory is in the way of a hard link".into(),
                });
            }
            Ok(_) => rustix::fs::unlinkat(&dir, name.as_os_str(), AtFlags::empty())
                .map_err(|e| io_err("replace", shown(), e))?,
        }
        rustix::fs::linkat(
            &target_dir,
            target_name.as_os_str(),
            &dir,
            name.as_os_str(),
            AtFlags::empty(),
        )
        .map_err(|e| io_err("create hard link", shown(), e))?;
        rustix::fs::fsync(&dir).map_err(|e| io_err("fsync directory of", shown(), e))
    }

    /// Applies a directory's own mode and times (after everything inside it is written).
    /// The owner keeps `rwx` so that a later run can still enter and resume.
    pub fn finish_dir(
        &self,
        rel: &[OsString],
        mode: u32,
        atime: Time,
        mtime: Time,
    ) -> Result<(), IngestError> {
        let shown = || format!("{}/{}", self.path.display(), rel_display(rel));
        let Some(fd) = self.open_dir(rel)? else {
            return Err(IngestError::Conflict {
                path: shown(),
                why: "the directory vanished while ingesting".into(),
            });
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode((mode & 0o777) | 0o700))
            .map_err(|e| io_err("chmod", shown(), e))?;
        rustix::fs::futimens(&fd, &timestamps(atime, mtime))
            .map_err(|e| io_err("set times of", shown(), e))?;
        rustix::fs::fsync(&fd).map_err(|e| io_err("fsync", shown(), e))?;
        Ok(())
    }

    /// The root descriptor (tests).
    pub fn root(&self) -> impl AsFd + '_ {
        self.root_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rel(parts: &[&str]) -> Vec<OsString> {
        parts.iter().map(OsString::from).collect()
    }

    #[test]
    fn never_follows_a_symlink_planted_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let ds_path = dir.path().join("ds");
        let ds = Datastore::open(&ds_path).unwrap();
        std::os::unix::fs::symlink(&outside, ds_path.join("vm")).unwrap();
        // A directory through the planted link is refused...
        let e = ds.ensure_dir(&rel(&["vm", "sub"])).err().unwrap();
        assert!(matches!(e, IngestError::NotADirectory { .. }), "{e}");
        // ...and so is a file below it.
        let t = ds.create_temp(7, 4).unwrap();
        let (tmp, mut f) = (t.name.clone(), &t.file);
        f.write_all(b"data").unwrap();
        let e = ds
            .commit_file(
                &tmp,
                f,
                4,
                0o644,
                Time::default(),
                Time::default(),
                &rel(&["vm", "x"]),
            )
            .unwrap_err();
        assert!(matches!(e, IngestError::NotADirectory { .. }), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // A file whose final name is a planted symlink replaces the link, not its target.
        let target = outside.join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, ds_path.join("f")).unwrap();
        let t = ds.create_temp(8, 3).unwrap();
        let (tmp, mut f) = (t.name.clone(), &t.file);
        f.write_all(b"new").unwrap();
        ds.commit_file(
            &tmp,
            f,
            3,
            0o4755,
            Time::default(),
            Time {
                secs: 1000,
                nanos: 5,
            },
            &rel(&["f"]),
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(ds_path.join("f")).unwrap();
        assert!(meta.is_file());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mode() & 0o7777, 0o755, "set-id bits are dropped");
        assert_eq!(meta.mtime(), 1000);
        assert_eq!(std::fs::read(ds_path.join("f")).unwrap(), b"new");
    }

    #[test]
    fn direct_and_buffered_pieces_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path()).unwrap();
        let size = 4 * 4096 + 7;
        let t = ds.create_temp(3, size).unwrap();
        let mut chunk = AlignedBuf::new(5 * 4096);
        let c = chunk.bytes_mut();
        for (i, b) in c.iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        // Unaligned head, a run with whole pages and ragged edges, the file's ragged tail.
        let ranges = [(10, 14), (4096 - 5, 3 * 4096 + 9), (4 * 4096, size)];
        for (a, b) in ranges {
            t.write_range(c, 0, a, b).unwrap();
        }
        let got = std::fs::read(dir.path().join(STATE_DIR).join(TMP_DIR).join(&t.name)).unwrap();
        let mut want = vec![0u8; size as usize];
        for (a, b) in ranges {
            want[a as usize..b as usize].copy_from_slice(&c[a as usize..b as usize]);
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[test]
    fn inspecting_creates_nothing_and_preparing_after_a_racing_ingest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        let ds = Datastore::inspect(&missing).unwrap();
        assert!(ds.open_dir(&rel(&["x"])).unwrap().is_none());
        assert!(ds.available().unwrap() > 0);
        assert!(!dir.path().join("a").exists());
        let mut ds = Datastore::inspect(dir.path()).unwrap();
        assert!(!dir.path().join(STATE_DIR).exists());
        // Another ingest started in between: what this one looked at may have changed.
        let _other = Datastore::open(dir.path()).unwrap();
        let e = ds.prepare().err().unwrap();
        assert!(matches!(e, IngestError::Busy { .. }), "{e}");
    }

    #[test]
    fn a_second_ingest_into_the_same_datastore_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Datastore::open(dir.path()).unwrap();
        let e = Datastore::open(dir.path()).err().unwrap();
        assert!(matches!(e, IngestError::Busy { .. }), "{e}");
    }

    #[test]
    fn leftover_temporaries_are_cleared_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ds = Datastore::open(dir.path()).unwrap();
            let t = ds.create_temp(1, 4).unwrap();
            (&t.file).write_all(b"half").unwrap();
        }
        let tmp = dir.path().join(STATE_DIR).join(TMP_DIR);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
        let _ds = Datastore::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
