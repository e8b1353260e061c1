//! The export: what every procedure shares — the appliance's state checks (locked → ACCES,
//! sealed → ROFS), persistent handles, the tracker of UNSTABLE writes, this run's write
//! verifier, and the mapping of store results to NFS attributes and statuses.
//!
//! Store calls block on disk I/O (a durable change returns once it is on the device,
//! sharing its fsync with concurrent callers), so each runs under
//! [`tokio::task::block_in_place`]: requests stay concurrent without copying a WRITE's
//! payload for a blocking pool.

use std::sync::Arc;
use std::time::Duration;

use nfsserve::nfs::{fattr3, fileid3, ftype3, nfs_fh3, nfsstat3, nfstime3, specdata3};
use odt_store::Store;
use odt_store::format::journal::{Kind, Time};
use odt_store::trip::control_api::State;

use super::handles::Handles;
use super::status::{Subject, is_routine, status_of};
use crate::pending::Pending;
use crate::state::Appliance;
use crate::throttle::{Throttle, suppressed_note};

/// Largest READ or WRITE payload (also what FSINFO advertises as preferred and maximum).
pub const MAX_IO: u32 = 1 << 20;
/// How long a repeated log message is held back.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What an operation needs from the appliance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading, or nothing that changes the store.
    Read,
    /// A change.
    Write,
}

/// The export. Cheap to clone.
#[derive(Clone)]
pub struct Export {
    inner: Arc<Inner>,
}

/// What the export's clones share.
pub struct Inner {
    /// The appliance: state, store, meter.
    pub app: Arc<Appliance>,
    /// File handles of this device set.
    pub handles: Handles,
    /// Holds back repeated log lines.
    pub throttle: Throttle,
    /// Writes acknowledged as UNSTABLE and still running (the appliance's tracker: the
    /// seal waits for them too).
    pub pending: Arc<Pending>,
    /// Write verifier of this run: a restart may lose UNSTABLE writes not yet committed,
    /// so clients must see a new verifier and send them again.
    pub verifier: [u8; 8],
}

impl std::ops::Deref for Export {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// A store time as NFS sends it.
pub fn to_time(t: Time) -> nfstime3 {
    nfstime3 {
        seconds: t.secs.clamp(0, u32::MAX as i64) as u32,
        nseconds: t.nanos,
    }
}

/// An NFS time as the store keeps it.
pub fn from_time(t: nfstime3) -> Time {
    Time {
        secs: t.seconds as i64,
        nanos: t.nseconds.min(999_999_999),
    }
}

/// A name for log lines.
pub fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
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

    /// Largest file size (and end of a write) the store accepts: its capacity. Sizes past
    /// it are refused with FBIG before the store sees them (the store refuses them too).
    pub fn max_file_size(&self) -> u64 {
        self.app.info().max_file_size
    }

    /// Waits for the writes still running in the background (at shutdown).
    pub async fn drain(&self) {
        self.pending.drain().await
    }

    /// Runs a store call that may wait for the devices without stalling the async workers.
    /// Calls that only read the namespace in memory (`getattr`, `lookup`, `readdir`) run
    /// directly: handing the worker over would cost more than they take.
    pub fn blocking<T>(&self, f: impl FnOnce() -> T) -> T {
        tokio::task::block_in_place(f)
    }

    /// The store, if the state allows `need`.
    pub fn store(&self, need: Need) -> Result<&Arc<Store>, nfsstat3> {
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
    pub fn fail(
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

    /// The path of `id` from the export's root, for log lines.
    pub fn path_of(&self, store: &Store, id: fileid3) -> String {
        format!("/{}", store.path(id))
    }

    /// The path of `name` in directory `dir`, for log lines.
    pub fn path_in(&self, store: &Store, dir: fileid3, name: &[u8]) -> String {
        let d = store.path(dir);
        if d.is_empty() {
            format!("/{}", show(name))
        } else {
            format!("/{d}/{}", show(name))
        }
    }

    /// The file id behind a handle; a malformed or foreign handle is logged (throttled).
    pub fn id_of(&self, fh: &nfs_fh3) -> Result<fileid3, nfsstat3> {
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

    /// The handle of file `id`.
    pub fn handle_of(&self, id: fileid3) -> nfs_fh3 {
        self.handles.encode(id)
    }

    /// A store entry's attributes as NFS sends them.
    pub fn fattr(&self, a: &odt_store::Attr) -> fattr3 {
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

    /// The attributes of `id` once its acknowledged writes have reached the store.
    pub async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        let s = self.store(Need::Read)?;
        self.pending.settle(id).await;
        s.getattr(id)
            .map(|a| self.fattr(&a))
            .map_err(|e| self.fail("GETATTR", Subject::Object, e, || format!("file id {id}")))
    }

    /// The attributes of the object behind `fh`.
    pub async fn attributes_of(&self, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
        self.getattr(self.id_of(fh)?).await
    }

    /// Finds `name` in directory `dir`.
    pub async fn lookup(&self, dir: fileid3, name: &[u8]) -> Result<fileid3, nfsstat3> {
        let s = self.store(Need::Read)?;
        s.lookup(dir, name).map_err(|e| {
            // A missing directory is a stale handle; a missing name is routine.
            let subject = match s.getattr(dir) {
                Ok(_) => Subject::Name,
                Err(_) => Subject::Object,
            };
            self.fail("LOOKUP", subject, e, || self.path_in(s, dir, name))
        })
    }
}
