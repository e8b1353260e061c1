//! The NFSv3 export: `nfsserve`'s [`NFSFileSystem`] mapped onto the store.
//!
//! Every store call blocks on disk I/O (a WRITE returns only once durable, sharing its
//! fsync with concurrent writers), so each runs under [`tokio::task::block_in_place`]:
//! `nfsserve` handles the requests of a connection concurrently, one task each, and this
//! keeps them concurrent without copying the write payload for a blocking pool.
//!
//! Behaviour worth knowing:
//! - Before unlock every operation answers `NFS3ERR_ACCES`; after the seal every change
//!   answers `NFS3ERR_ROFS` (see [`crate::state`]).
//! - Handles are persistent ([`crate::handles`]); the write verifier changes with every
//!   run, as UNSTABLE writes not yet committed may be lost by a restart.
//! - WRITE and COMMIT never reach `nfsserve` (which answers FILE_SYNC to every WRITE and
//!   has no COMMIT): the gate answers them ([`crate::writeback`]). It also answers the
//!   metadata procedures and MOUNT ([`crate::meta`], [`crate::mount`]) with these methods. GETATTR, READ and
//!   SETATTR first wait for the file's acknowledged writes ([`crate::pending`]).
//! - `nfsserve` calls `remove` for both REMOVE and RMDIR: directories go to `rmdir`, the
//!   rest to `remove`.
//! - CREATE UNCHECKED of an existing file succeeds and applies the attributes (a size of 0
//!   truncates), as RFC 1813 asks; GUARDED answers `NFS3ERR_EXIST`, and so does EXCLUSIVE
//!   unless the file carries the same CREATE's verifier ([`crate::meta`]).
//! - READ is capped at [`MAX_IO`] whatever the client asks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nfsserve::nfs::{
    self, fattr3, fileid3, filename3, fsinfo3, ftype3, nfs_fh3, nfspath3, nfsstat3, nfstime3,
    sattr3, set_atime, set_gid3, set_mode3, set_mtime, set_size3, set_uid3, specdata3,
};
use nfsserve::vfs::{DirEntry, NFSFileSystem, ReadDirResult, VFSCapabilities};
use odt_store::Store;
use odt_store::format::journal::{AttrChange, Kind, Time};
use odt_store::trip::control_api::State;

use crate::handles::Handles;
use crate::nfsstat::{Subject, is_routine, status_of};
use crate::pending::Pending;
use crate::state::Appliance;
use crate::throttle::{Throttle, suppressed_note};

/// Largest READ or WRITE payload (also what FSINFO advertises as preferred and maximum).
pub const MAX_IO: u32 = 1 << 20;
/// Largest file offset the store accepts.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// How long a repeated log message is held back.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What an operation needs from the appliance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Reading, or nothing that changes the store.
    Read,
    /// A change.
    Write,
}

/// The export. Cheap to clone: `nfsserve` and the gate (which answers WRITE and COMMIT
/// itself, see [`crate::writeback`]) share one.
#[derive(Clone)]
pub struct Export {
    inner: Arc<Inner>,
}

/// What the export's clones share.
pub struct Inner {
    pub(crate) app: Arc<Appliance>,
    pub(crate) handles: Handles,
    pub(crate) throttle: Throttle,
    /// Writes acknowledged as UNSTABLE and still running (the appliance's tracker: the
    /// seal waits for them too).
    pub(crate) pending: Arc<Pending>,
    /// Write verifier of this run: a restart may lose UNSTABLE writes not yet committed,
    /// so clients must see a new verifier and send them again.
    pub(crate) verifier: [u8; 8],
}

impl std::ops::Deref for Export {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

fn to_time(t: Time) -> nfstime3 {
    nfstime3 {
        seconds: t.secs.clamp(0, u32::MAX as i64) as u32,
        nseconds: t.nanos,
    }
}

fn from_time(t: nfstime3) -> Time {
    Time {
        secs: t.seconds as i64,
        nanos: t.nseconds.min(999_999_999),
    }
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// The attribute changes a `sattr3` asks for.
pub fn attr_change(s: &sattr3) -> AttrChange {
    let now = Time::now();
    AttrChange {
        mode: match s.mode {
            set_mode3::mode(m) => Some(m & 0o7777),
            set_mode3::Void => None,
        },
        uid: match s.uid {
            set_uid3::uid(u) => Some(u),
            set_uid3::Void => None,
        },
        gid: match s.gid {
            set_gid3::gid(g) => Some(g),
            set_gid3::Void => None,
        },
        size: match s.size {
            set_size3::size(n) => Some(n),
            set_size3::Void => None,
        },
        atime: match s.atime {
            set_atime::DONT_CHANGE => None,
            set_atime::SET_TO_SERVER_TIME => Some(now),
            set_atime::SET_TO_CLIENT_TIME(t) => Some(from_time(t)),
        },
        mtime: match s.mtime {
            set_mtime::DONT_CHANGE => None,
            set_mtime::SET_TO_SERVER_TIME => Some(now),
            set_mtime::SET_TO_CLIENT_TIME(t) => Some(from_time(t)),
        },
    }
}

fn is_empty_change(c: &AttrChange) -> bool {
    *c == AttrChange::default()
}

impl Export {
    /// The export of `app`.
    pub fn new(app: Arc<Appliance>) -> Self {
        let handles = Handles::new(app.info().set_id);
        let pending = app.pending().clone();
        Export {
            inner: Arc::new(Inner {
                app,
                handles,
                throttle: Throttle::new(LOG_WINDOW),
                pending,
                verifier: odt_store::crypto::keys::random_u64().to_be_bytes(),
            }),
        }
    }

    /// Waits for the writes still running in the background (at shutdown).
    pub async fn drain(&self) {
        self.pending.drain().await
    }

    /// Runs a blocking store call without stalling the async workers.
    pub(crate) fn blocking<T>(&self, f: impl FnOnce() -> T) -> T {
        tokio::task::block_in_place(f)
    }

    /// The store, if the state allows `need`.
    pub(crate) fn store(&self, need: Need) -> Result<&Arc<Store>, nfsstat3> {
        match (self.app.state(), self.app.store()) {
            (State::Locked, _) | (_, None) => {
                if let Some(n) = self.throttle.admit("locked") {
                    tracing::warn!(
                        "NFS access refused (NFS3ERR_ACCES): the appliance is locked; \
                         unlock it with `odt unlock`{}",
                        suppressed_note(n)
                    );
                }
                Err(nfsstat3::NFS3ERR_ACCES)
            }
            (State::Sealed, Some(_)) if need == Need::Write => {
                if let Some(n) = self.throttle.admit("sealed") {
                    tracing::warn!(
                        "NFS change refused (NFS3ERR_ROFS): the appliance is sealed and \
                         read-only{}",
                        suppressed_note(n)
                    );
                }
                Err(nfsstat3::NFS3ERR_ROFS)
            }
            (_, Some(s)) => Ok(s),
        }
    }

    /// Maps a store error to its status, logging it (throttled) unless it is routine.
    pub(crate) fn fail(
        &self,
        op: &'static str,
        subject: Subject,
        e: odt_store::Error,
        path: impl FnOnce() -> String,
    ) -> nfsstat3 {
        let status = status_of(&e, subject);
        if !is_routine(&e) {
            self.app.meter().error();
            if let Some(n) = self.throttle.admit(op) {
                tracing::warn!(
                    path = %path(),
                    "NFS {op} failed with {status:?}: {}{}",
                    odt_store::error::one_line(&e),
                    suppressed_note(n)
                );
            }
        }
        status
    }

    pub(crate) fn path_of(&self, store: &Store, id: fileid3) -> String {
        format!("/{}", store.path(id))
    }

    fn path_in(&self, store: &Store, dir: fileid3, name: &[u8]) -> String {
        let d = store.path(dir);
        if d.is_empty() {
            format!("/{}", show(name))
        } else {
            format!("/{d}/{}", show(name))
        }
    }

    pub(crate) fn fattr(&self, a: &odt_store::Attr) -> fattr3 {
        fattr3 {
            ftype: match a.kind {
                Kind::File => ftype3::NF3REG,
                Kind::Dir => ftype3::NF3DIR,
                Kind::Symlink => ftype3::NF3LNK,
            },
            mode: a.mode & 0o7777,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            used: a.used,
            rdev: specdata3::default(),
            fsid: self.app.info().set_id,
            fileid: a.id,
            atime: to_time(a.atime),
            mtime: to_time(a.mtime),
            ctime: to_time(a.ctime),
        }
    }

    /// Applies `change` to `id` if it changes anything; returns the attributes.
    fn apply_change(
        &self,
        store: &Store,
        id: fileid3,
        change: AttrChange,
    ) -> odt_store::Result<odt_store::Attr> {
        if is_empty_change(&change) {
            store.getattr(id)
        } else {
            store.setattr(id, change)
        }
    }
}

#[async_trait]
impl NFSFileSystem for Export {
    fn capabilities(&self) -> VFSCapabilities {
        // Always read-write here: refusing per operation gives clients ROFS after the seal
        // (and ACCES while locked) instead of ACCESS-denied errors.
        VFSCapabilities::ReadWrite
    }

    fn root_dir(&self) -> fileid3 {
        odt_store::engine::namespace::ROOT
    }

    async fn lookup(&self, dirid: fileid3, filename: &filename3) -> Result<fileid3, nfsstat3> {
        let s = self.store(Need::Read)?;
        self.blocking(|| {
            s.lookup(dirid, filename).map_err(|e| {
                // A missing directory is a stale handle; a missing name is routine.
                let subject = match s.getattr(dirid) {
                    Ok(_) => Subject::Name,
                    Err(_) => Subject::Object,
                };
                self.fail("LOOKUP", subject, e, || self.path_in(s, dirid, filename))
            })
        })
    }

    async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        let s = self.store(Need::Read)?;
        self.pending.settle(id).await;
        self.blocking(|| {
            s.getattr(id)
                .map(|a| self.fattr(&a))
                .map_err(|e| self.fail("GETATTR", Subject::Object, e, || format!("file id {id}")))
        })
    }

    async fn setattr(&self, id: fileid3, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        let s = self.store(Need::Write)?;
        self.pending.settle(id).await;
        let change = attr_change(&setattr);
        if change.size.is_some_and(|n| n > MAX_FILE_SIZE) {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
        self.blocking(|| {
            self.apply_change(s, id, change)
                .map(|a| self.fattr(&a))
                .map_err(|e| self.fail("SETATTR", Subject::Object, e, || self.path_of(s, id)))
        })
    }

    async fn read(
        &self,
        id: fileid3,
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool), nfsstat3> {
        let s = self.store(Need::Read)?;
        self.pending.settle(id).await;
        let count = count.min(MAX_IO);
        let r = self.blocking(|| {
            s.read(id, offset, count)
                .map_err(|e| self.fail("READ", Subject::Object, e, || self.path_of(s, id)))
        })?;
        self.app.meter().read(r.0.len() as u64);
        Ok(r)
    }

    async fn write(&self, id: fileid3, offset: u64, data: &[u8]) -> Result<fattr3, nfsstat3> {
        let s = self.store(Need::Write)?;
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > MAX_FILE_SIZE)
        {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
        let a = self.blocking(|| {
            s.write(id, offset, data).map_err(|e| {
                self.fail("WRITE", Subject::Object, e, || {
                    format!(
                        "{} at byte {offset} ({} bytes)",
                        self.path_of(s, id),
                        data.len()
                    )
                })
            })
        })?;
        self.app.meter().wrote(data.len() as u64);
        Ok(self.fattr(&a))
    }

    async fn create(
        &self,
        dirid: fileid3,
        filename: &filename3,
        attr: sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let s = self.store(Need::Write)?;
        let mut change = attr_change(&attr);
        let mode = change.mode.take().unwrap_or(0o644);
        self.blocking(|| {
            let fail = |e| {
                self.fail("CREATE", Subject::Name, e, || {
                    self.path_in(s, dirid, filename)
                })
            };
            let made = match s.create(dirid, filename, mode) {
                Ok(a) => {
                    self.app.meter().created();
                    a
                }
                // UNCHECKED on an existing file: use it (GUARDED goes to `create_exclusive`).
                Err(e)
                    if matches!(
                        e.kind(),
                        odt_store::error::ErrorKind::Namespace(
                            odt_store::error::NamespaceError::Exists
                        )
                    ) =>
                {
                    let id = s.lookup(dirid, filename).map_err(fail)?;
                    let a = s.getattr(id).map_err(fail)?;
                    if a.kind != Kind::File {
                        return Err(nfsstat3::NFS3ERR_EXIST);
                    }
                    change.mode = Some(mode);
                    a
                }
                Err(e) => return Err(fail(e)),
            };
            let a = self.apply_change(s, made.id, change).map_err(fail)?;
            Ok((a.id, self.fattr(&a)))
        })
    }

    async fn create_exclusive(
        &self,
        dirid: fileid3,
        filename: &filename3,
    ) -> Result<fileid3, nfsstat3> {
        let s = self.store(Need::Write)?;
        self.blocking(|| {
            let a = s.create(dirid, filename, 0o644).map_err(|e| {
                self.fail("CREATE", Subject::Name, e, || {
                    self.path_in(s, dirid, filename)
                })
            })?;
            self.app.meter().created();
            Ok(a.id)
        })
    }

    async fn mkdir(
        &self,
        dirid: fileid3,
        dirname: &filename3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let s = self.store(Need::Write)?;
        self.blocking(|| {
            let a = s.mkdir(dirid, dirname, 0o755).map_err(|e| {
                self.fail("MKDIR", Subject::Name, e, || {
                    self.path_in(s, dirid, dirname)
                })
            })?;
            self.app.meter().created();
            Ok((a.id, self.fattr(&a)))
        })
    }

    async fn remove(&self, dirid: fileid3, filename: &filename3) -> Result<(), nfsstat3> {
        let s = self.store(Need::Write)?;
        self.blocking(|| {
            let fail = |e| {
                self.fail("REMOVE", Subject::Name, e, || {
                    self.path_in(s, dirid, filename)
                })
            };
            let id = s.lookup(dirid, filename).map_err(fail)?;
            let is_dir = s.getattr(id).map_err(fail)?.kind == Kind::Dir;
            let r = if is_dir {
                s.rmdir(dirid, filename)
            } else {
                s.remove(dirid, filename)
            };
            r.map_err(fail)?;
            self.app.meter().removed();
            Ok(())
        })
    }

    async fn rename(
        &self,
        from_dirid: fileid3,
        from_filename: &filename3,
        to_dirid: fileid3,
        to_filename: &filename3,
    ) -> Result<(), nfsstat3> {
        let s = self.store(Need::Write)?;
        self.blocking(|| {
            s.rename(from_dirid, from_filename, to_dirid, to_filename)
                .map_err(|e| {
                    self.fail("RENAME", Subject::Name, e, || {
                        format!(
                            "{} -> {}",
                            self.path_in(s, from_dirid, from_filename),
                            self.path_in(s, to_dirid, to_filename)
                        )
                    })
                })
        })
    }

    async fn readdir(
        &self,
        dirid: fileid3,
        start_after: fileid3,
        max_entries: usize,
    ) -> Result<ReadDirResult, nfsstat3> {
        let s = self.store(Need::Read)?;
        // nfsserve sizes max_entries from the client's byte budget; cap it anyway.
        let max = max_entries.clamp(1, 4096);
        self.blocking(|| {
            let (entries, end) = s
                .readdir(dirid, start_after, max)
                .map_err(|e| self.fail("READDIR", Subject::Object, e, || self.path_of(s, dirid)))?;
            Ok(ReadDirResult {
                entries: entries
                    .into_iter()
                    .map(|e| DirEntry {
                        fileid: e.attr.id,
                        attr: self.fattr(&e.attr),
                        name: e.name.into(),
                    })
                    .collect(),
                end,
            })
        })
    }

    async fn symlink(
        &self,
        dirid: fileid3,
        linkname: &filename3,
        symlink: &nfspath3,
        attr: &sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let s = self.store(Need::Write)?;
        let mut change = attr_change(attr);
        change.mode = None;
        self.blocking(|| {
            let fail = |e| {
                self.fail("SYMLINK", Subject::Name, e, || {
                    self.path_in(s, dirid, linkname)
                })
            };
            let a = s.symlink(dirid, linkname, symlink).map_err(fail)?;
            self.app.meter().created();
            let a = self.apply_change(s, a.id, change).map_err(fail)?;
            Ok((a.id, self.fattr(&a)))
        })
    }

    async fn readlink(&self, id: fileid3) -> Result<nfspath3, nfsstat3> {
        let s = self.store(Need::Read)?;
        self.blocking(|| {
            s.readlink(id)
                .map(nfspath3::from)
                .map_err(|e| self.fail("READLINK", Subject::Object, e, || self.path_of(s, id)))
        })
    }

    async fn fsinfo(&self, root_fileid: fileid3) -> Result<fsinfo3, nfsstat3> {
        // Never an error: nfsserve 0.11 leaves the attributes out of a failed FSINFO reply,
        // which clients cannot decode. While locked the limits are still true; the
        // attributes are left out and the next GETATTR says ACCES.
        let attr = match self.getattr(root_fileid).await {
            Ok(a) => nfs::post_op_attr::attributes(a),
            Err(_) => nfs::post_op_attr::Void,
        };
        Ok(fsinfo3 {
            obj_attributes: attr,
            rtmax: MAX_IO,
            rtpref: MAX_IO,
            rtmult: 4096,
            wtmax: MAX_IO,
            wtpref: MAX_IO,
            wtmult: 4096,
            dtpref: 64 * 1024,
            maxfilesize: MAX_FILE_SIZE,
            time_delta: nfstime3 {
                seconds: 0,
                nseconds: 1,
            },
            properties: nfs::FSF_SYMLINK | nfs::FSF_HOMOGENEOUS | nfs::FSF_CANSETTIME,
        })
    }

    fn id_to_fh(&self, id: fileid3) -> nfs_fh3 {
        self.handles.encode(id)
    }

    fn fh_to_id(&self, fh: &nfs_fh3) -> Result<fileid3, nfsstat3> {
        self.handles.decode(fh).map_err(|e| {
            if let Some(n) = self.throttle.admit("handle") {
                tracing::info!(
                    "NFS client sent a {e} (answered {:?}){}",
                    e.status(),
                    suppressed_note(n)
                );
            }
            e.status()
        })
    }

    fn serverid(&self) -> nfs::cookieverf3 {
        self.verifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    fn name(s: &str) -> filename3 {
        s.as_bytes().into()
    }

    fn code(r: nfsstat3) -> u32 {
        r as u32
    }

    fn mode_attr(mode: u32) -> sattr3 {
        sattr3 {
            mode: set_mode3::mode(mode),
            ..sattr3::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_export_refuses_everything_with_acces() {
        let fx = Fixture::new(64 << 20);
        let x = Export::new(fx.appliance(false));
        let root = x.root_dir();
        assert_eq!(
            code(x.getattr(root).await.unwrap_err()),
            nfsstat3::NFS3ERR_ACCES as u32
        );
        assert_eq!(
            code(x.lookup(root, &name("a")).await.unwrap_err()),
            nfsstat3::NFS3ERR_ACCES as u32
        );
        assert_eq!(
            code(
                x.create(root, &name("a"), sattr3::default())
                    .await
                    .unwrap_err()
            ),
            nfsstat3::NFS3ERR_ACCES as u32
        );
        // FSINFO never fails (nfsserve garbles its error reply); it carries no attributes.
        let info = x.fsinfo(root).await.unwrap();
        assert!(matches!(info.obj_attributes, nfs::post_op_attr::Void));
        // Handles work before unlock: MOUNT hands out the root handle.
        assert_eq!(x.fh_to_id(&x.id_to_fh(root)).unwrap(), root);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_and_directories() {
        let fx = Fixture::new(128 << 20);
        let x = Export::new(fx.unlocked());
        let root = x.root_dir();

        let (f, a) = x
            .create(root, &name("disk.vmdk"), mode_attr(0o600))
            .await
            .unwrap();
        assert_eq!(a.mode, 0o600);
        assert!(matches!(a.ftype, ftype3::NF3REG));
        let data: Vec<u8> = (0..(1 << 20) + 10).map(|i| (i * 7 % 251) as u8).collect();
        let a = x.write(f, 4096, &data).await.unwrap();
        assert_eq!(a.size, 4096 + data.len() as u64);
        let (back, eof) = x.read(f, 4096, 1 << 20).await.unwrap();
        assert_eq!(back, &data[..1 << 20]);
        assert!(!eof);
        let (tail, eof) = x.read(f, 4096 + (1 << 20), 1 << 20).await.unwrap();
        assert_eq!(tail, &data[1 << 20..]);
        assert!(eof);
        let (head, _) = x.read(f, 0, 4096).await.unwrap();
        assert_eq!(
            head,
            vec![0u8; 4096],
            "the gap before the first write reads as zeros"
        );
        // READ is capped at 1 MiB whatever the client asks.
        let (big, _) = x.read(f, 0, u32::MAX).await.unwrap();
        assert_eq!(big.len(), MAX_IO as usize);
        assert_eq!(x.app.meter().totals().written, data.len() as u64);

        // UNCHECKED create of an existing file reuses it and applies the size.
        let truncate = sattr3 {
            size: set_size3::size(0),
            ..sattr3::default()
        };
        let (again, a) = x.create(root, &name("disk.vmdk"), truncate).await.unwrap();
        assert_eq!(again, f);
        assert_eq!(a.size, 0);
        assert_eq!(
            code(
                x.create_exclusive(root, &name("disk.vmdk"))
                    .await
                    .unwrap_err()
            ),
            nfsstat3::NFS3ERR_EXIST as u32
        );

        let (d, da) = x.mkdir(root, &name("vm one")).await.unwrap();
        assert!(matches!(da.ftype, ftype3::NF3DIR));
        assert_eq!(
            code(
                x.create(d, &name("bad/name"), sattr3::default())
                    .await
                    .unwrap_err()
            ),
            nfsstat3::NFS3ERR_INVAL as u32
        );
        let long = "é".repeat(128); // 256 bytes
        assert_eq!(
            code(
                x.create(d, &name(&long), sattr3::default())
                    .await
                    .unwrap_err()
            ),
            nfsstat3::NFS3ERR_NAMETOOLONG as u32
        );
        let ok255 = format!("{}a", "é".repeat(127));
        x.create(d, &name(&ok255), sattr3::default()).await.unwrap();
        x.rename(root, &name("disk.vmdk"), d, &name("disk-1.vmdk"))
            .await
            .unwrap();
        assert_eq!(x.lookup(d, &name("disk-1.vmdk")).await.unwrap(), f);
        assert_eq!(
            code(x.lookup(root, &name("disk.vmdk")).await.unwrap_err()),
            nfsstat3::NFS3ERR_NOENT as u32
        );
        assert_eq!(x.lookup(d, &name("..")).await.unwrap(), root);

        let (l, la) = x
            .symlink(
                d,
                &name("latest"),
                &b"disk-1.vmdk"[..].into(),
                &sattr3::default(),
            )
            .await
            .unwrap();
        assert!(matches!(la.ftype, ftype3::NF3LNK));
        assert_eq!(x.readlink(l).await.unwrap().0, b"disk-1.vmdk");

        // SETATTR: mode and client times.
        let t = nfstime3 {
            seconds: 1_600_000_000,
            nseconds: 5,
        };
        let change = sattr3 {
            mode: set_mode3::mode(0o640),
            mtime: set_mtime::SET_TO_CLIENT_TIME(t),
            ..sattr3::default()
        };
        let a = x.setattr(f, change).await.unwrap();
        assert_eq!(a.mode, 0o640);
        assert_eq!((a.mtime.seconds, a.mtime.nseconds), (1_600_000_000, 5));

        // READDIR pages by the id of the last entry returned.
        for i in 0..10 {
            x.create(d, &name(&format!("f{i:02}")), sattr3::default())
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let r = x.readdir(d, after, 4).await.unwrap();
            assert!(r.entries.len() <= 4);
            seen.extend(
                r.entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned()),
            );
            if r.end {
                break;
            }
            after = r.entries.last().unwrap().fileid;
        }
        assert_eq!(seen.len(), 13, "{seen:?}");
        let mut sorted = seen.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 13, "no entry twice: {seen:?}");

        // REMOVE takes files and (empty) directories; a non-empty one is refused.
        assert_eq!(
            code(x.remove(root, &name("vm one")).await.unwrap_err()),
            nfsstat3::NFS3ERR_NOTEMPTY as u32
        );
        x.remove(d, &name("disk-1.vmdk")).await.unwrap();
        assert_eq!(
            code(x.getattr(f).await.unwrap_err()),
            nfsstat3::NFS3ERR_STALE as u32
        );
        let (e, _) = x.mkdir(root, &name("empty")).await.unwrap();
        x.remove(root, &name("empty")).await.unwrap();
        assert_eq!(
            code(x.getattr(e).await.unwrap_err()),
            nfsstat3::NFS3ERR_STALE as u32
        );
        assert_eq!(
            code(x.lookup(e, &name("x")).await.unwrap_err()),
            nfsstat3::NFS3ERR_STALE as u32,
            "a lookup in a removed directory is a stale handle, not a missing name"
        );

        let (g, _) = x.create(root, &name("g"), sattr3::default()).await.unwrap();
        assert_eq!(
            code(x.write(g, u64::MAX - 10, b"x").await.unwrap_err()),
            nfsstat3::NFS3ERR_FBIG as u32
        );
        let info = x.fsinfo(root).await.unwrap();
        assert_eq!(
            (info.rtpref, info.wtpref, info.rtmax),
            (MAX_IO, MAX_IO, MAX_IO)
        );
        assert_eq!(info.maxfilesize, i64::MAX as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_export_is_read_only_and_readable() {
        let fx = Fixture::new(64 << 20);
        let app = fx.unlocked();
        let x = Export::new(app.clone());
        let root = x.root_dir();
        let (f, _) = x.create(root, &name("a"), sattr3::default()).await.unwrap();
        x.write(f, 0, b"before the seal").await.unwrap();
        app.test_seal().unwrap();
        let rofs = nfsstat3::NFS3ERR_ROFS as u32;
        assert_eq!(code(x.write(f, 0, b"after").await.unwrap_err()), rofs);
        assert_eq!(
            code(
                x.create(root, &name("b"), sattr3::default())
                    .await
                    .unwrap_err()
            ),
            rofs
        );
        assert_eq!(
            code(x.create_exclusive(root, &name("b")).await.unwrap_err()),
            rofs
        );
        assert_eq!(code(x.mkdir(root, &name("d")).await.unwrap_err()), rofs);
        assert_eq!(code(x.remove(root, &name("a")).await.unwrap_err()), rofs);
        assert_eq!(
            code(
                x.rename(root, &name("a"), root, &name("c"))
                    .await
                    .unwrap_err()
            ),
            rofs
        );
        assert_eq!(
            code(x.setattr(f, mode_attr(0o600)).await.unwrap_err()),
            rofs
        );
        assert_eq!(
            code(
                x.symlink(root, &name("l"), &b"a"[..].into(), &sattr3::default())
                    .await
                    .unwrap_err()
            ),
            rofs
        );
        assert_eq!(x.read(f, 0, 100).await.unwrap().0, b"before the seal");
        assert_eq!(x.lookup(root, &name("a")).await.unwrap(), f);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handles_of_other_sets_are_stale() {
        let fx = Fixture::new(64 << 20);
        let other = Fixture::new(64 << 20);
        let x = Export::new(fx.appliance(false));
        let y = Export::new(other.appliance(false));
        assert_eq!(
            code(x.fh_to_id(&y.id_to_fh(1)).unwrap_err()),
            nfsstat3::NFS3ERR_STALE as u32
        );
        let garbage = nfs_fh3 { data: vec![9; 8] };
        assert_eq!(
            code(x.fh_to_id(&garbage).unwrap_err()),
            nfsstat3::NFS3ERR_BADHANDLE as u32
        );
    }
}
