//! The store: a namespace of files whose bytes live in encrypted records on the devices.
//!
//! Writes are compressed, encrypted and hashed in the caller's thread (so concurrent callers
//! use every core), then queued under one lock that also updates the namespace and encodes
//! the journal ops. Durability is a group commit: the first waiter becomes the leader, writes
//! everything queued so far in large sequential pwrites plus one journal batch, syncs, and
//! wakes every waiter whose ops were in it.
//!
//! The files here follow the store's life: [`recover`] (replaying the journal at open),
//! [`commit`] (the group commit and the seal's closing of the log), [`compact`] (the
//! journal's checkpoints), [`ops`] (namespace operations), [`write`] and [`read`] (file
//! content).

mod clean;
mod commit;
mod compact;
mod ops;
mod read;
mod recover;
mod space;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};

use crate::crypto::cipher::{Cipher, Purpose, SessionKey};
use crate::crypto::keys::{Secrets, UnlockCode};
use crate::device::Device;
use crate::engine::log::{Chain, DevLog};
use crate::engine::namespace::{Inode, Namespace, SegmentGeometry};
use crate::engine::observer::WriteObserver;
use crate::engine::pins::Pins;
use crate::engine::view::View;
use crate::error::{KeyError, Result, one_line};
use crate::format::journal::{Kind, Op, Time};
use crate::format::seal_record;
use crate::format::segment;
use crate::format::superblock::{self, Superblock};

pub use clean::Cleaned;
pub use read::{BulkRead, Damage, ReadScratch};

/// Attributes of an entry, as the NFS layer reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (the NFS file id).
    pub id: u64,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Bytes the content occupies (not counting holes), before compression.
    pub used: u64,
    /// Names it has (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Last access.
    pub atime: Time,
    /// Last content change.
    pub mtime: Time,
    /// Last attribute change.
    pub ctime: Time,
}

impl Attr {
    fn of(i: &Inode) -> Attr {
        Attr {
            id: i.id,
            kind: i.kind,
            mode: i.mode,
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            used: i.stored_bytes(),
            nlink: i.nlink(),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
        }
    }
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: Vec<u8>,
    /// Where a listing resumes after this entry (see [`Store::readdir`]).
    pub cookie: u64,
    /// Its attributes.
    pub attr: Attr,
}

/// How the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The appliance: may write, recovers after a crash.
    ReadWrite,
    /// Verification and ingest: never writes to the devices.
    ReadOnly,
}

/// Counters for `odt status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files.
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
    /// Bytes the log occupies on the devices (records, headers, footers).
    pub log_bytes: u64,
    /// Bytes free for records on all devices (room in the open segments and free
    /// segments, less the segment per device kept for the cleaner).
    pub free_bytes: u64,
    /// Bytes of the records files are served from (headers and ciphertext).
    pub live_bytes: u64,
    /// Bytes of the log's segments held by records no file refers to any more (deleted,
    /// truncated, overwritten, or never journaled before a crash) and by the room left at
    /// the end of full segments: free again once their segments are cleaned. Free, live
    /// and dead bytes add up to the capacity.
    pub dead_bytes: u64,
    /// Capacity of the segment areas of all devices, less the segment per device kept for
    /// the cleaner.
    pub capacity_bytes: u64,
    /// Segments the cleaner freed since the devices were provisioned.
    pub segments_cleaned: u64,
    /// Times the metadata journal was compacted since the devices were provisioned (the
    /// generation of its start pointer).
    pub journal_compactions: u64,
    /// Journal bytes in use: the checkpoint it starts with (if compacted) and the ops
    /// after it. Drops when the journal is compacted.
    pub journal_used: u64,
    /// Journal bytes it may use before it must be compacted (the area it is in).
    pub journal_len: u64,
    /// Bytes written by clients since the store was opened.
    pub written_bytes: u64,
}

/// A device set whose superblocks have been read, but which is not unlocked yet.
#[derive(Debug)]
pub struct Locked {
    devs: Vec<Device>,
    sbs: Vec<Superblock>,
}

/// Bytes of record content the segment areas of `sbs` hold for files (each segment less
/// its header and footer blocks, each device less the segment kept for the cleaner): the
/// store's capacity as `odt status` reports it, and the largest file size.
pub fn capacity(sbs: &[Superblock]) -> u64 {
    sbs.iter().map(dev_capacity).sum()
}

/// What [`capacity`] counts of one device.
pub(crate) fn dev_capacity(sb: &Superblock) -> u64 {
    sb.segment_count().saturating_sub(1) * per_segment(sb)
}

/// Bytes of records one segment holds (less its header and footer blocks).
pub(crate) fn per_segment(sb: &Superblock) -> u64 {
    sb.segment_size - 2 * segment::BLOCK
}

impl Locked {
    /// Opens the devices of one set (any order) and checks that they belong together.
    pub fn open(paths: &[PathBuf], access: Access) -> Result<Locked> {
        let set = superblock::open_set(paths, access == Access::ReadWrite)?;
        let (devs, sbs) = set.into_iter().unzip();
        Ok(Locked { devs, sbs })
    }

    /// The largest size a file may have (see [`Store::max_file_size`]).
    pub fn max_file_size(&self) -> u64 {
        capacity(&self.sbs)
    }

    /// The superblock of device 0.
    pub fn superblock(&self) -> &Superblock {
        &self.sbs[0]
    }

    /// The devices, ordered by index.
    pub fn devices(&self) -> &[Device] {
        &self.devs
    }

    /// The superblocks, ordered by index.
    pub fn superblocks(&self) -> &[Superblock] {
        &self.sbs
    }

    /// Unwraps the keys with the customer's unlock code.
    pub fn secrets_from_code(&self, code: &UnlockCode) -> Result<Secrets> {
        Secrets::unwrap_with_code(&self.sbs[0].wrapped_for_customer, code)
    }

    /// Unwraps the keys with the ingest identity.
    pub fn secrets_from_identity(&self, id: &age::x25519::Identity) -> Result<Secrets> {
        Secrets::unwrap_with_identity(&self.sbs[0].wrapped_for_ingest, id)
    }

    /// Opens the store with the unwrapped secrets: replays the journal and, read-write,
    /// recovers from a crash and starts a new session.
    pub fn unlock(self, secrets: Secrets, access: Access) -> Result<Store> {
        if Secrets::verifying_key(&secrets) != self.sbs[0].signing_public {
            return Err(KeyError::Wrong(
                "the unwrapped keys do not match this device's signing key".into(),
            )
            .into());
        }
        Store::open(self, secrets, access)
    }
}

struct Core {
    /// Shared with the views taken of it: copied on change while one is alive.
    ns: Arc<Namespace>,
    logs: Vec<DevLog>,
    /// Encoded ops waiting for the next batch.
    ops: Vec<u8>,
    /// Journal offset after the batches written or assigned.
    journal_end: u64,
    /// Where the journal starts and may grow to.
    area: compact::JournalArea,
    /// Number of the batch queued ops go into.
    open_batch: u64,
    next_dev: usize,
    written_bytes: u64,
    /// Device tails named by the last batch built (where the next batch's records start).
    batch_tails: Vec<u64>,
}

impl Core {
    /// The namespace to change (a copy if a view still shares it).
    fn ns_mut(&mut self) -> &mut Namespace {
        Arc::make_mut(&mut self.ns)
    }
}

struct Commit {
    durable: u64,
    leading: bool,
    failed: Option<String>,
}

/// A decrypted record's plaintext, by (device, address).
type CachedRecord = ((u32, u64), Arc<Vec<u8>>);

struct Leader {
    chains: Vec<Chain>,
}

/// An unlocked, open store. Share it between threads with `Arc`.
pub struct Store {
    devs: Vec<Device>,
    sbs: Vec<Superblock>,
    cipher: Cipher,
    secrets: Secrets,
    session: u64,
    epoch: u32,
    record_key: SessionKey,
    journal_key: SessionKey,
    counter: AtomicU64,
    access: Access,
    sealed: AtomicBool,
    core: Mutex<Core>,
    commit: Mutex<Commit>,
    commit_cv: Condvar,
    queue_cv: Condvar,
    leader: Mutex<Leader>,
    cache: Mutex<Vec<CachedRecord>>,
    old_keys: Mutex<HashMap<u64, Arc<SessionKey>>>,
    /// Held shared by every change, exclusively by the seal: once the seal holds it, no change
    /// is half way through.
    gate: RwLock<()>,
    /// Readers of records at addresses the cleaner may free (see [`Pins`]).
    pins: Pins,
    /// Held by the one cleaning step under way.
    cleaning: Mutex<clean::Cleaning>,
    /// When the store was opened: the clock of `last_write_ms`.
    opened: std::time::Instant,
    /// Milliseconds after `opened` of the last client write (the cleaner works harder once
    /// the store is idle).
    last_write_ms: AtomicU64,
    /// Told of new files and of every write and size change (see [`Store::set_observer`]).
    observer: OnceLock<Arc<dyn WriteObserver>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make the data unreachable; state is validated before use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    fn open(locked: Locked, secrets: Secrets, access: Access) -> Result<Store> {
        let Locked { devs, sbs } = locked;
        let cipher = sbs[0].cipher;
        let session = crate::crypto::keys::random_u64();
        let mut store = Store {
            record_key: SessionKey::derive(cipher, &secrets.data_key, session, Purpose::Record),
            journal_key: SessionKey::derive(cipher, &secrets.data_key, session, Purpose::Journal),
            cipher,
            secrets,
            session,
            epoch: 0,
            counter: AtomicU64::new(0),
            access,
            sealed: AtomicBool::new(false),
            core: Mutex::new(Core {
                ns: Arc::new(Namespace::new()),
                logs: (0..devs.len()).map(|_| DevLog::default()).collect(),
                ops: Vec::new(),
                journal_end: 0,
                area: compact::JournalArea::default(),
                open_batch: 1,
                next_dev: 0,
                written_bytes: 0,
                batch_tails: vec![0; devs.len()],
            }),
            commit: Mutex::new(Commit {
                durable: 0,
                leading: false,
                failed: None,
            }),
            commit_cv: Condvar::new(),
            queue_cv: Condvar::new(),
            leader: Mutex::new(Leader {
                chains: (0..devs.len()).map(|_| Chain::empty()).collect(),
            }),
            cache: Mutex::new(Vec::new()),
            old_keys: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            pins: Pins::default(),
            cleaning: Mutex::new(clean::Cleaning::default()),
            opened: std::time::Instant::now(),
            last_write_ms: AtomicU64::new(0),
            observer: OnceLock::new(),
            devs,
            sbs,
        };
        store.recover()?;
        // Replay and checkpoints rebuild the live records; their per-segment counts start
        // here, once, and are kept as ops apply from now on.
        let geometry: Vec<SegmentGeometry> = store
            .sbs
            .iter()
            .map(|sb| SegmentGeometry {
                data_start: sb.data_start(),
                segment_size: sb.segment_size,
                count: sb.segment_count(),
            })
            .collect();
        lock(&store.core).ns_mut().set_segment_geometry(&geometry);
        let sealed_op = lock(&store.core).ns.seal.is_some();
        if sealed_op {
            store.set_sealed();
            let has_record = seal_record::read(&store.devs[0], &store.sbs[0])?.is_some();
            if !has_record && access == Access::ReadWrite {
                // A crash between the seal op and the seal record: finish what was begun.
                tracing::warn!("finishing a seal that a crash interrupted");
                store.write_seal_record()?;
            }
        }
        if access == Access::ReadWrite && !store.is_sealed() {
            let epoch = lock(&store.core).ns.epoch + 1;
            store.epoch = epoch;
            store.submit(vec![Op::Session { epoch, session }])?;
            store.sync()?;
        }
        Ok(store)
    }

    /// The superblock of device 0 (job, geometry, cipher).
    pub fn superblock(&self) -> &Superblock {
        &self.sbs[0]
    }

    /// The largest size a file may have: the data bytes the device set can hold. A larger
    /// file would be mostly holes, and its BLAKE3 root (standard BLAKE3, so `b3sum` agrees)
    /// costs hashing every byte of its apparent size; at this limit, sealing one costs at
    /// most what sealing a full device set costs. Writes and size changes past it fail
    /// with [`StoreError::FileTooLarge`](crate::error::StoreError::FileTooLarge).
    pub fn max_file_size(&self) -> u64 {
        capacity(&self.sbs)
    }

    /// The devices of the set, by index.
    pub fn devices(&self) -> &[Device] {
        &self.devs
    }

    /// The superblocks of the set, by index.
    pub fn superblocks(&self) -> &[Superblock] {
        &self.sbs
    }

    /// The job's secrets (for signing the seal).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// This run's session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Whether the store refuses changes because it was sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Marks the store sealed (read-only) from now on.
    pub fn set_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    fn key_for_session(&self, session: u64, purpose: Purpose) -> Arc<SessionKey> {
        let tag = session ^ (matches!(purpose, Purpose::Journal) as u64 * 0x9e37_79b9_7f4a_7c15);
        let mut keys = lock(&self.old_keys);
        keys.entry(tag)
            .or_insert_with(|| {
                Arc::new(SessionKey::derive(
                    self.cipher,
                    &self.secrets.data_key,
                    session,
                    purpose,
                ))
            })
            .clone()
    }

    /// Attaches the one observer of file content (set once, before clients write: it sees
    /// only what comes after). Returns the observer back if one is attached already.
    pub fn set_observer(
        &self,
        observer: Arc<dyn WriteObserver>,
    ) -> std::result::Result<(), Arc<dyn WriteObserver>> {
        self.observer.set(observer)
    }

    /// The observer attached with [`Store::set_observer`], if any.
    pub fn observer(&self) -> Option<&dyn WriteObserver> {
        self.observer.get().map(|o| &**o)
    }

    /// A read-only snapshot of the namespace as it is now (for tree walks: bundle checks,
    /// manifests, verification, ingest). Cheap to take; while it is alive, the next change
    /// copies the namespace once, so hold it for a walk, not for the store's lifetime.
    pub fn view(&self) -> View {
        let pin = self.pins.pin();
        View::new(lock(&self.core).ns.clone(), Some(pin))
    }

    /// Counters for status reports.
    pub fn stats(&self) -> Stats {
        let core = lock(&self.core);
        let t = core.ns.totals();
        let mut s = Stats {
            files: t.files,
            dirs: t.dirs,
            symlinks: t.symlinks,
            logical_bytes: t.file_bytes,
            ..Stats::default()
        };
        for (d, (l, sb)) in core.logs.iter().zip(&self.sbs).enumerate() {
            let (_, free) = self.dev_free(&core, d);
            // The segment kept for the cleaner is neither free nor dead for anyone.
            let capacity = dev_capacity(sb);
            s.free_bytes += free.saturating_sub(per_segment(sb));
            s.capacity_bytes += capacity;
            let segs = core.ns.segments().dev(d as u32);
            s.segments_cleaned += segs.cleaned();
            let closed = segs.in_use().count().saturating_sub(1) as u64;
            if let Some(seg) = l.segment(sb) {
                s.log_bytes += closed * sb.segment_size + (l.tail - sb.segment_start(seg));
            }
        }
        s.dead_bytes = (s.capacity_bytes - s.free_bytes).saturating_sub(core.ns.live().bytes());
        s.live_bytes = core.ns.live().bytes();
        s.journal_used = core.journal_end - core.area.start + core.ops.len() as u64;
        s.journal_len = core.area.limit - core.area.start;
        s.journal_compactions = core.area.generation;
        s.written_bytes = core.written_bytes;
        s
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.access == Access::ReadWrite
            && let Err(e) = self.sync()
        {
            tracing::error!(error = %one_line(&e), "final sync failed");
        }
    }
}
