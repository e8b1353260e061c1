//! The store: a namespace of files whose bytes live in encrypted records on the devices.
//!
//! Writes are compressed, encrypted and hashed in the caller's thread (so concurrent callers
//! use every core), then queued under one lock that also updates the namespace and encodes
//! the journal ops. Durability is a group commit: the first waiter becomes the leader, writes
//! everything queued so far in large sequential pwrites plus one journal batch, syncs, and
//! wakes every waiter whose ops were in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use blake3::hazmat::HasherExt;

use crate::cipher::{Cipher, Purpose, SessionKey};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::journal::{self, AttrChange, BatchHeader, Kind, Loc, Op, Time};
use crate::keys::{Secrets, UnlockCode};
use crate::log::{Chain, DevLog, Piece};
use crate::namespace::{BLOCK, Extent, Inode, Namespace, ROOT};
use crate::record::{self, Binding, MAX_PLAIN};
use crate::segment;
use crate::superblock::{self, JOURNAL_START, Superblock};

/// Granularity of zero detection inside a write: all-zero runs of this size become holes.
const ZERO_GRAIN: usize = 64 * 1024;
/// Room a batch header, its tag and the device tails may take in the journal.
const BATCH_SLACK: u64 = 256;
/// Upper bound of one encoded op (a name is at most 255 bytes; symlink targets are capped).
const OP_MAX: u64 = 1400;
/// Longest symlink target accepted.
pub const MAX_SYMLINK: usize = 1024;
/// Longest name accepted.
pub const MAX_NAME: usize = 255;
/// Bytes kept free in the journal for the seal's last batches.
const JOURNAL_RESERVE: u64 = 1 << 20;
/// Queued bytes per device above which writers wait for the leader to catch up. Memory:
/// the queue, the batch being written and a spare staging buffer each hold up to this
/// much (see `log::STAGING`).
const MAX_QUEUED: u64 = 32 << 20;
/// Queued bytes per device at which an unstable write starts a commit (if none runs), so
/// the queue is written while it refills instead of once it is full.
const COMMIT_AT: u64 = 8 << 20;
/// Records of decrypted plaintext kept for reads.
const READ_CACHE: usize = 16;
/// How far past the journal's end to look for batches that would betray damage.
const MAX_BATCH_SCAN: u64 = 64 << 20;
/// Most record bytes a batch may name and still be made durable together with them by one
/// sync (see [`one_sync`]); recovery reads this much at most to check the last batch.
const ONE_SYNC_MAX: u64 = 8 << 20;

/// Whether the batch moving the device tails from `before` to `after` is written with its
/// records and made durable by a single sync, rather than records first, sync, then batch,
/// sync. Small batches (a small file's COMMIT, a CREATE) take one sync: recovery checks
/// every record the journal's last batch names when that batch qualifies, and drops it
/// as torn if one did not reach the device. A batch qualifies when its records are few
/// (recovery reads them all) and stay in the segments the tails were already in (no
/// segment footer, whose loss recovery would not notice, is written with it).
/// Writer and recovery both decide with this function, so they always agree.
fn one_sync(sbs: &[Superblock], before: &[u64], after: &[u64]) -> bool {
    let mut bytes = 0u64;
    for ((sb, &b), &a) in sbs.iter().zip(before).zip(after) {
        if a == b {
            continue;
        }
        if b == 0 || a < b || sb.segment_of(b) != sb.segment_of(a) {
            return false;
        }
        bytes += a - b;
    }
    bytes <= ONE_SYNC_MAX
}

/// Attributes of an entry, as the NFS layer reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub id: u64,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Bytes the content occupies (not counting holes), before compression.
    pub used: u64,
    pub nlink: u32,
    pub atime: Time,
    pub mtime: Time,
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
    pub name: Vec<u8>,
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
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
    /// Bytes the log occupies on the devices (records, headers, footers).
    pub log_bytes: u64,
    /// Bytes free for records on all devices.
    pub free_bytes: u64,
    /// Capacity of the segment areas of all devices.
    pub capacity_bytes: u64,
    pub journal_used: u64,
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

impl Locked {
    /// Opens the devices of one set (any order) and checks that they belong together.
    pub fn open(paths: &[PathBuf], access: Access) -> Result<Locked> {
        let set = superblock::open_set(paths, access == Access::ReadWrite)?;
        let (devs, sbs) = set.into_iter().unzip();
        Ok(Locked { devs, sbs })
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
            return Err(Error::WrongKey(
                "the unwrapped keys do not match this device's signing key".into(),
            ));
        }
        Store::open(self, secrets, access)
    }
}

struct Core {
    ns: Namespace,
    logs: Vec<DevLog>,
    /// Encoded ops waiting for the next batch.
    ops: Vec<u8>,
    /// Journal bytes written or assigned to batches.
    journal_end: u64,
    /// Number of the batch queued ops go into.
    open_batch: u64,
    next_dev: usize,
    written_bytes: u64,
    /// Device tails named by the last batch built (where the next batch's records start).
    batch_tails: Vec<u64>,
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
    /// SHA-256 of bundle files computed as they arrive.
    digests: crate::digest::Tracker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make the data unreachable; state is validated before use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks a name given by a client.
pub fn check_name(name: &[u8]) -> Result<()> {
    let show = || String::from_utf8_lossy(name).into_owned();
    if name.is_empty() {
        return Err(Error::InvalidName {
            name: show(),
            why: "empty",
        });
    }
    if name.len() > MAX_NAME {
        return Err(Error::NameTooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return Err(Error::InvalidName {
            name: show(),
            why: "reserved",
        });
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(Error::InvalidName {
            name: show(),
            why: "contains '/' or NUL",
        });
    }
    Ok(())
}

/// True if every byte is zero.
pub fn is_zero(b: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets aligned middles.
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

/// Whether every 512-byte device sector a journal batch at device offset `at` touches holds
/// some of its bytes. The journal past its end is always zeros (provisioning and recovery
/// zero it) and devices write whole sectors, so a batch torn by a crash or power cut leaves
/// at least one sector's share of it all zeros; an encrypted batch never has one otherwise
/// (only a share of a few bytes could be zero by chance, and then damage is taken for a
/// tear: the safe side, as a crash must never make the store refuse to open).
pub(crate) fn fully_written(at: u64, batch: &[u8]) -> bool {
    !zero_share(at, batch, 1)
}

/// Whether some 512-byte device sector holds a share of `bytes` (found at device offset
/// `at`) of at least `min` bytes that is all zeros.
fn zero_share(at: u64, bytes: &[u8], min: usize) -> bool {
    const SECTOR: u64 = 512;
    let mut i = 0usize;
    while i < bytes.len() {
        let next_boundary = ((at + i as u64) / SECTOR + 1) * SECTOR;
        let j = ((next_boundary - at) as usize).min(bytes.len());
        if j - i >= min && is_zero(&bytes[i..j]) {
            return true;
        }
        i = j;
    }
    false
}

/// Whether a record read back from device offset `at` is missing sectors a crash kept from
/// reaching the device (the log past its tail is zeros), rather than damaged after being
/// written: its magic has a zero byte, or some sector's share of its encrypted body (8
/// bytes or more, never all zeros by chance) is all zeros. Its header's other fields may
/// be zeros legitimately; they always share a sector with the magic or with the body.
fn torn_record(at: u64, bytes: &[u8]) -> bool {
    let head = bytes.len().min(record::HEADER_LEN);
    bytes[..head.min(4)].contains(&0) || zero_share(at + head as u64, &bytes[head..], 8)
}

/// Digest of a record's plaintext: the BLAKE3 chaining value of the plaintext as the subtree
/// at its file offset when it is a whole aligned 1 MiB block (so the manifest can merge it
/// into the file's root without re-reading), its plain BLAKE3 hash otherwise.
pub fn record_digest(offset: u64, plain: &[u8]) -> [u8; 32] {
    if offset.is_multiple_of(BLOCK) && plain.len() as u64 == BLOCK {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        h.update(plain);
        h.finalize_non_root()
    } else {
        *blake3::hash(plain).as_bytes()
    }
}

/// Largest run of adjacent records [`Store::read_into`] reads with one `pread`.
const BULK_READ_MAX: usize = 16 << 20;

/// Buffers [`Store::read_into`] reuses from call to call (one per reading thread).
#[derive(Debug, Default)]
pub struct ReadScratch {
    /// Record bytes as read from the device (decrypted in place).
    rec: Vec<u8>,
    /// The plaintext of a record only part of which was asked for.
    plain: Vec<u8>,
}

/// What [`Store::read_into`] filled.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BulkRead {
    /// Bytes of the file in the range asked for (fewer than asked at the end of the file).
    pub len: usize,
    /// Ranges of this read whose records are damaged (zeroed in the buffer), by file offset.
    pub damaged: Vec<crate::verify::Damage>,
}

/// A record built outside the lock, waiting to be queued.
struct Built {
    offset: u64,
    len: u32,
    generation: u64,
    digest: [u8; 32],
    bytes: Option<Vec<u8>>,
}

impl Store {
    fn open(locked: Locked, secrets: Secrets, access: Access) -> Result<Store> {
        let Locked { devs, sbs } = locked;
        let cipher = sbs[0].cipher;
        let session = crate::keys::random_u64();
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
                ns: Namespace::new(),
                logs: (0..devs.len()).map(|_| DevLog::default()).collect(),
                ops: Vec::new(),
                journal_end: 0,
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
            digests: crate::digest::Tracker::default(),
            devs,
            sbs,
        };
        store.recover()?;
        let sealed_op = lock(&store.core).ns.seal.is_some();
        if sealed_op {
            store.set_sealed();
            let has_record = crate::seal::read(&store.devs[0], &store.sbs[0])?.is_some();
            if !has_record && access == Access::ReadWrite {
                // A crash between the seal op and the seal record: finish what was begun.
                tracing::warn!("finishing a seal that a crash interrupted");
                crate::seal::write_record(&store)?;
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

    // ----- recovery -------------------------------------------------------------------

    /// Replays the journal up to its first incomplete batch (a crash's torn tail) and rebuilds
    /// the segment chains. Records are durable before the next batch is written; those of
    /// the last batch, if it was made durable with them by one sync, are checked here, and
    /// the batch is dropped as torn if some did not reach the device (see [`one_sync`]).
    fn recover(&mut self) -> Result<()> {
        let dev0 = &self.devs[0];
        let jlen = self.sbs[0].journal_len;
        let mut core = lock(&self.core);
        let mut tails: Vec<u64> = vec![0; self.devs.len()];
        let mut pos = 0u64;
        let mut seq = 1u64;
        let mut held: Option<(u64, Vec<u64>, Vec<Op>)> = None;
        let mut buf = Vec::new();
        let mut buf_at = 0u64;
        let read = |buf: &mut Vec<u8>, buf_at: &mut u64, at: u64, n: usize| -> Result<bool> {
            if at + n as u64 > jlen {
                return Ok(false);
            }
            if at < *buf_at || at + n as u64 > *buf_at + buf.len() as u64 {
                let want = (n.max(4 << 20) as u64).min(jlen - at) as usize;
                *buf = dev0.read_vec(JOURNAL_START + at, want)?;
                *buf_at = at;
            }
            Ok(true)
        };
        loop {
            if !read(&mut buf, &mut buf_at, pos, journal::BATCH_HEADER)? {
                break;
            }
            let off = (pos - buf_at) as usize;
            let Some(h) = BatchHeader::decode(&buf[off..]) else {
                break;
            };
            if h.seq != seq || h.cipher != self.cipher {
                break;
            }
            if !read(&mut buf, &mut buf_at, pos, h.total_len())? {
                break;
            }
            let off = (pos - buf_at) as usize;
            let batch = &buf[off..off + h.total_len()];
            if !h.crc_ok(batch) {
                break;
            }
            let key = self.key_for_session(h.session, Purpose::Journal);
            let (t, ops) = journal::open_batch(&key, &h, batch).map_err(|e| {
                Error::corrupt(
                    "journal batch",
                    dev0.path(),
                    JOURNAL_START + pos,
                    match e {
                        journal::BatchError::Auth => {
                            "fails authentication (tampered metadata)".to_string()
                        }
                        journal::BatchError::Decode(w) => format!("does not decode: {w}"),
                    },
                )
            })?;
            if t.len() != self.devs.len() {
                return Err(Error::corrupt(
                    "journal batch",
                    dev0.path(),
                    JOURNAL_START + pos,
                    "names a different number of devices",
                ));
            }
            if let Some((hpos, ht, hops)) = held.take() {
                Self::replay(&mut core.ns, &hops, dev0.path(), hpos)?;
                tails = ht;
            }
            held = Some((pos, t, ops));
            pos += h.total_len() as u64;
            seq += 1;
        }
        let mut end = pos;
        let mut dropped = false;
        if let Some((hpos, ht, hops)) = held.take() {
            if self.records_reached_device(&tails, &ht, &hops, hpos)? {
                Self::replay(&mut core.ns, &hops, dev0.path(), hpos)?;
                tails = ht;
            } else {
                // Never acknowledged: its sync did not return. Cleared below like a torn tail.
                end = hpos;
                seq -= 1;
                dropped = true;
            }
        }
        if end < jlen && !dropped {
            self.check_journal_tail(end, seq)?;
        }
        core.journal_end = end;
        core.open_batch = seq;
        core.batch_tails = tails.clone();
        for ((log, t), dev) in core.logs.iter_mut().zip(&tails).zip(&self.devs) {
            if self.access == Access::ReadWrite {
                *log = DevLog::resume(dev, *t)?;
            } else {
                log.tail = *t;
            }
        }
        // A sealed log was closed by the seal (footers written after the last batch): it is
        // not a crash's leftovers and must stay exactly as signed.
        let sealed = core.ns.seal.is_some();
        drop(core);
        lock(&self.commit).durable = seq - 1;
        if self.access == Access::ReadWrite {
            let mut chains = Vec::new();
            for (i, dev) in self.devs.iter().enumerate() {
                chains.push(Chain::resume(dev, &self.sbs[i], tails[i])?);
            }
            lock(&self.leader).chains = chains;
            if !sealed {
                self.clear_after_tails(&tails, end)?;
            }
        }
        Ok(())
    }

    /// For the journal's last batch (at `pos`, moving the tails from `before` to `after`):
    /// false if it was written with its records under one sync and some record did not reach
    /// the device (a crash before that sync returned). A record that is there but fails its
    /// check was damaged after being written: the batch is kept and reads of that range
    /// report the damage, as for any other record.
    fn records_reached_device(
        &self,
        before: &[u64],
        after: &[u64],
        ops: &[Op],
        pos: u64,
    ) -> Result<bool> {
        if before == after || !one_sync(&self.sbs, before, after) {
            return Ok(true);
        }
        for op in ops {
            let Op::Write {
                id,
                offset,
                len,
                generation,
                loc: Some(loc),
                hash,
                ..
            } = op
            else {
                continue;
            };
            let Some(dev) = self.devs.get(loc.dev as usize) else {
                return Err(Error::corrupt(
                    "journal batch",
                    self.devs[0].path(),
                    JOURNAL_START + pos,
                    format!(
                        "names a record on device {} of {}",
                        loc.dev + 1,
                        self.devs.len()
                    ),
                ));
            };
            let mut bytes = dev.read_vec(loc.addr, loc.len as usize)?;
            let torn = torn_record(loc.addr, &bytes);
            let e = Extent {
                len: *len as u64,
                rec: crate::namespace::RecRef {
                    loc: *loc,
                    start: *offset,
                    plain_len: *len,
                    hash: *hash,
                    generation: *generation,
                },
            };
            let mut plain = vec![0u8; *len as usize];
            if let Err(why) = self.open_record(*id, &e, &mut bytes, &mut plain) {
                if torn {
                    tracing::warn!(
                        "the last commit before the device was closed did not complete (a \
                         record it names is missing from {} at byte {}): it was never \
                         acknowledged and is dropped",
                        dev.path().display(),
                        loc.addr
                    );
                    return Ok(false);
                }
                tracing::error!(
                    "a record of the last commit is damaged (file id {id}, bytes {offset}..{}): \
                     {why}; run `odt verify` for the files affected",
                    offset + *len as u64
                );
            }
        }
        Ok(true)
    }

    fn replay(ns: &mut Namespace, ops: &[Op], path: &Path, pos: u64) -> Result<()> {
        for op in ops {
            ns.apply(op).map_err(|e| {
                Error::corrupt(
                    "journal",
                    path,
                    JOURNAL_START + pos,
                    format!("op {op:?} does not apply: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Tells a crash's torn tail from damage where replay stopped. Two kinds of damage are
    /// refused (opening fails rather than silently forgetting acknowledged changes):
    /// - the batch there was written in full but fails its checksum or does not belong
    ///   (see [`fully_written`]);
    /// - a complete batch with a later sequence number follows (damage in the middle).
    fn check_journal_tail(&self, end: u64, next_seq: u64) -> Result<()> {
        let jlen = self.sbs[0].journal_len;
        let window = (jlen - end).min(MAX_BATCH_SCAN) as usize;
        let buf = self.devs[0].read_vec(JOURNAL_START + end, window)?;
        if is_zero(&buf) {
            return Ok(());
        }
        let damaged = |why: String| {
            Err(Error::corrupt(
                "metadata journal",
                self.devs[0].path(),
                JOURNAL_START + end,
                why,
            ))
        };
        // A header's first sector is written whole or not at all, so non-zero bytes where
        // its constant fields belong are damage, not a tear: read it with them restored.
        let mut head = [0u8; journal::BATCH_HEADER];
        let n = head.len().min(buf.len());
        head[..n].copy_from_slice(&buf[..n]);
        let written = !is_zero(&head[..4]);
        journal::restore_constants(&mut head, self.cipher);
        if written
            && let Some(h) = BatchHeader::decode(&head)
            && h.total_len() <= buf.len()
        {
            let batch = &buf[..h.total_len()];
            if h.crc_ok(batch) && batch[..journal::BATCH_HEADER] == head {
                return damaged(format!(
                    "an intact batch numbered {} stands where batch {next_seq} belongs \
                     (replayed or moved metadata); run `odt verify` for the files affected",
                    h.seq
                ));
            }
            if fully_written(JOURNAL_START + end, batch) {
                return damaged(format!(
                    "batch {next_seq} (the last commit before the device was closed) was \
                     written in full but fails its checksum: damaged after it was written, \
                     not torn by a crash; the changes it carried cannot be read (run `odt \
                     verify` for the files affected)"
                ));
            }
        }
        let mut i = 0;
        while i + journal::BATCH_HEADER <= buf.len() {
            if buf[i..].starts_with(b"ODTJ")
                && let Some(h) = BatchHeader::decode(&buf[i..])
                && h.seq > next_seq
                && h.crc_ok(&buf[i..])
            {
                return damaged(format!(
                    "batch {next_seq} is damaged but batch {} follows it; the journal \
                     cannot be replayed past the damage (run `odt verify` for the files \
                     affected)",
                    h.seq
                ));
            }
            i += 1;
        }
        Ok(())
    }

    /// Zeroes what an interrupted leader may have left past the durable tails, so that the
    /// log ends exactly where the journal says (the seal check relies on it).
    fn clear_after_tails(&self, tails: &[u64], journal_end: u64) -> Result<()> {
        for (i, dev) in self.devs.iter().enumerate() {
            let sb = &self.sbs[i];
            let (start_seg, from) = if tails[i] == 0 {
                (0, sb.segment_start(0))
            } else {
                let s = sb.segment_of(tails[i]).expect("tail is not 0");
                (s, tails[i])
            };
            let seg_end = sb.segment_start(start_seg) + sb.segment_size - segment::BLOCK;
            let probe = dev.read_vec(from, (seg_end - from).min(64 * 1024) as usize)?;
            let next = start_seg + 1;
            let next_dirty = next < sb.segment_count()
                && !is_zero(&dev.read_vec(sb.segment_start(next), segment::BLOCK as usize)?);
            if !is_zero(&probe) {
                dev.zero(from, seg_end - from)?;
            }
            if next_dirty {
                dev.zero(sb.segment_start(next), sb.segment_size)?;
            }
            // The open segment has no footer yet: one there was written by a commit that
            // closed this segment and then died before its journal batch.
            if !is_zero(&dev.read_vec(seg_end, segment::BLOCK as usize)?) {
                dev.zero(seg_end, segment::BLOCK)?;
            }
        }
        let jlen = self.sbs[0].journal_len;
        let n = (jlen - journal_end).min(1 << 20);
        if n > 0 && !is_zero(&self.devs[0].read_vec(JOURNAL_START + journal_end, n as usize)?) {
            let claimed = BatchHeader::decode(
                &self.devs[0].read_vec(JOURNAL_START + journal_end, journal::BATCH_HEADER)?,
            )
            .map(|h| h.total_len() as u64)
            .unwrap_or(0);
            self.devs[0].zero(
                JOURNAL_START + journal_end,
                n.max(claimed).min(jlen - journal_end),
            )?;
        }
        for d in &self.devs {
            d.sync()?;
        }
        Ok(())
    }

    // ----- group commit -----------------------------------------------------------------

    /// Admits one change: refuses if read-only or sealed, else holds the seal gate shared
    /// until the change is durable.
    fn writable(&self) -> Result<RwLockReadGuard<'_, ()>> {
        let g = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if self.access == Access::ReadOnly || self.is_sealed() {
            return Err(Error::ReadOnly);
        }
        Ok(g)
    }

    /// Stops all changes: waits for those under way, then marks the store sealed. Fails if it
    /// already is.
    pub fn begin_seal(&self) -> Result<()> {
        let _g = self.gate.write().unwrap_or_else(|e| e.into_inner());
        if self.access == Access::ReadOnly || self.is_sealed() {
            return Err(Error::ReadOnly);
        }
        self.set_sealed();
        Ok(())
    }

    /// Admits `ops` as one change (refused once read-only or sealed) and waits until they
    /// are durable.
    pub(crate) fn submit_change(&self, ops: Vec<Op>) -> Result<()> {
        let _admitted = self.writable()?;
        self.submit(ops)
    }

    /// Applies ops to the namespace and queues them; waits until they are durable. The caller
    /// has admitted the change (or is the seal).
    pub(crate) fn submit(&self, ops: Vec<Op>) -> Result<()> {
        let mut bytes = Vec::new();
        for op in &ops {
            journal::encode_op(op, &mut bytes);
        }
        let ticket = {
            let mut core = lock(&self.core);
            self.reserve_journal_bytes(&core, bytes.len() as u64)?;
            for op in &ops {
                core.ns.apply(op)?;
            }
            core.ops.extend_from_slice(&bytes);
            core.open_batch
        };
        self.wait_durable(ticket)
    }

    /// Bytes of journal written so far (durable batches and those being written).
    pub fn journal_end(&self) -> u64 {
        lock(&self.core).journal_end
    }

    fn reserve_journal(&self, core: &Core, n_ops: usize) -> Result<()> {
        self.reserve_journal_bytes(core, n_ops as u64 * OP_MAX)
    }

    fn reserve_journal_bytes(&self, core: &Core, op_bytes: u64) -> Result<()> {
        let need = core.journal_end
            + core.ops.len() as u64
            + op_bytes
            + BATCH_SLACK
            + 16 * self.devs.len() as u64;
        let reserve = if self.is_sealed() { 0 } else { JOURNAL_RESERVE };
        if need + reserve > self.sbs[0].journal_len {
            return Err(Error::NoSpace(format!(
                "the metadata journal is full ({} of {} bytes used)",
                core.journal_end, self.sbs[0].journal_len
            )));
        }
        Ok(())
    }

    /// Blocks until the batch `ticket` is durable, leading the commit if nobody is.
    fn wait_durable(&self, ticket: u64) -> Result<()> {
        let mut c = lock(&self.commit);
        loop {
            self.check_failed(&c)?;
            if c.durable >= ticket {
                return Ok(());
            }
            c = if c.leading {
                self.commit_cv.wait(c).unwrap_or_else(|e| e.into_inner())
            } else {
                self.lead_now(c)
            };
        }
    }

    fn check_failed(&self, c: &Commit) -> Result<()> {
        match &c.failed {
            None => Ok(()),
            Some(why) => Err(Error::Io {
                op: "commit",
                path: self.devs[0].path().to_path_buf(),
                offset: 0,
                source: std::io::Error::other(format!(
                    "an earlier commit failed and the store stopped accepting writes: {why}"
                )),
            }),
        }
    }

    /// Leads one group commit (nobody leads: `c.leading` is false) and wakes the waiters.
    fn lead_now<'a>(&'a self, c: MutexGuard<'a, Commit>) -> MutexGuard<'a, Commit> {
        self.lead_with(c, true)
    }

    /// Leads a group commit (`full`) or only writes the queued records to the devices, with
    /// neither sync nor journal batch (their ops stay queued for the next commit, which
    /// syncs the devices before its batch names them).
    fn lead_with<'a>(
        &'a self,
        mut c: MutexGuard<'a, Commit>,
        full: bool,
    ) -> MutexGuard<'a, Commit> {
        c.leading = true;
        drop(c);
        let r = if full {
            self.lead()
        } else {
            self.write_queued().map(|()| 0)
        };
        let mut c = lock(&self.commit);
        c.leading = false;
        match r {
            Ok(done) => c.durable = c.durable.max(done),
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                c.failed = Some(e.to_string());
            }
        }
        self.commit_cv.notify_all();
        c
    }

    /// Starts writing the queued records if no leader is at work, without waiting for
    /// anyone else's: unstable writes call this once enough is queued, so the device writes
    /// overlap the building of the next records. Nothing is synced: an unstable write is
    /// durable only at the next commit (COMMIT, `sync`, the appliance's periodic flush).
    fn commit_if_idle(&self) -> Result<()> {
        let c = lock(&self.commit);
        self.check_failed(&c)?;
        if !c.leading {
            let c = self.lead_with(c, false);
            self.check_failed(&c)?;
        }
        Ok(())
    }

    /// Writes the queued records to the devices (feeding the segment chains), no sync.
    fn write_queued(&self) -> Result<()> {
        let pieces = {
            let mut core = lock(&self.core);
            core.logs
                .iter_mut()
                .map(DevLog::take_pending)
                .collect::<Vec<_>>()
        };
        let mut leader = lock(&self.leader);
        self.write_pieces(&mut leader, &pieces)?;
        drop(leader);
        drop(pieces);
        self.recycle_inflight();
        Ok(())
    }

    /// After a leader wrote the in-flight pieces (and dropped its references to them):
    /// their staging buffers go back to each device's spares.
    fn recycle_inflight(&self) {
        let mut core = lock(&self.core);
        for log in core.logs.iter_mut() {
            let written = std::mem::take(&mut log.inflight);
            log.recycle(written);
        }
    }

    fn write_pieces(&self, leader: &mut Leader, pieces: &[Arc<Vec<Piece>>]) -> Result<()> {
        let write_dev = |i: usize, chain: &mut Chain, list: &[Piece]| -> Result<()> {
            for p in list {
                chain.feed(&self.devs[i], &self.sbs[i], p)?;
                let (at, blocks) = p.blocks();
                self.devs[i].write_blocks(blocks, at)?;
            }
            Ok(())
        };
        if self.devs.len() == 1 {
            return write_dev(0, &mut leader.chains[0], &pieces[0]);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = leader
                .chains
                .iter_mut()
                .enumerate()
                .map(|(i, chain)| {
                    let list = &pieces[i];
                    let write_dev = &write_dev;
                    s.spawn(move || write_dev(i, chain, list))
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("device writer panicked"))
        })
    }

    /// One group commit: takes what is queued, writes it, syncs. Returns the batch number.
    fn lead(&self) -> Result<u64> {
        let (batch_no, pieces, batch, at, moved) = {
            let mut core = lock(&self.core);
            let nothing = core.ops.is_empty() && core.logs.iter().all(|l| l.pending.is_empty());
            if nothing {
                return Ok(core.open_batch - 1);
            }
            let batch_no = core.open_batch;
            core.open_batch += 1;
            let tails: Vec<u64> = core.logs.iter().map(|l| l.tail).collect();
            // Devices this batch names records on (written by this leader or unsynced by
            // `write_queued` before it), or `None` if they are to be synced first.
            let moved = one_sync(&self.sbs, &core.batch_tails, &tails).then(|| {
                let moved = tails.iter().zip(&core.batch_tails).map(|(a, b)| a != b);
                moved.collect::<Vec<_>>()
            });
            let pieces: Vec<_> = core.logs.iter_mut().map(DevLog::take_pending).collect();
            self.queue_cv.notify_all();
            let ops = std::mem::take(&mut core.ops);
            let counter = self.counter.fetch_add(1, Ordering::Relaxed);
            let batch = journal::build_batch(
                &self.journal_key,
                self.cipher,
                batch_no,
                self.session,
                counter,
                &tails,
                &ops,
            );
            let at = core.journal_end;
            core.journal_end += batch.len() as u64;
            core.batch_tails = tails;
            (batch_no, pieces, batch, at, moved)
        };
        if at + batch.len() as u64 > self.sbs[0].journal_len {
            return Err(Error::NoSpace("the metadata journal is full".into()));
        }
        let mut leader = lock(&self.leader);
        self.write_pieces(&mut leader, &pieces)?;
        match moved {
            Some(mut moved) => {
                // Records and the batch naming them under one sync: recovery checks the
                // records of the last batch (see `one_sync`).
                self.devs[0].write_at(&batch, JOURNAL_START + at)?;
                moved[0] = true;
                self.sync_devices(&moved)?;
            }
            None => {
                // Records first, then the batch naming them: the batch on the device refers
                // to durable records only, however many there are.
                self.sync_devices(&vec![true; self.devs.len()])?;
                self.devs[0].write_at(&batch, JOURNAL_START + at)?;
                self.devs[0].sync()?;
            }
        }
        drop(leader);
        drop(pieces);
        self.recycle_inflight();
        Ok(batch_no)
    }

    /// Syncs the devices marked in `which`, in parallel.
    fn sync_devices(&self, which: &[bool]) -> Result<()> {
        let mut devs = self
            .devs
            .iter()
            .zip(which)
            .filter(|(_, w)| **w)
            .map(|(d, _)| d);
        if which.iter().filter(|w| **w).count() == 1 {
            return devs.next().expect("one device").sync();
        }
        std::thread::scope(|s| {
            let hs: Vec<_> = devs.map(|d| s.spawn(move || d.sync())).collect();
            hs.into_iter()
                .try_for_each(|h| h.join().expect("sync thread panicked"))
        })
    }

    /// Makes everything queued so far durable.
    pub fn sync(&self) -> Result<()> {
        let ticket = {
            let core = lock(&self.core);
            let nothing = core.ops.is_empty() && core.logs.iter().all(|l| l.pending.is_empty());
            core.open_batch - nothing as u64
        };
        self.wait_durable(ticket)
    }

    /// Closes the open segment of every device (footers written and synced): the log is
    /// then fully covered by the footer chain. Used by the seal. Returns per device the
    /// tail and the hash of its last footer.
    pub fn close_segments(&self) -> Result<Vec<(u64, [u8; 32])>> {
        self.sync()?;
        let core = lock(&self.core);
        let mut leader = lock(&self.leader);
        let mut out = Vec::new();
        for (i, chain) in leader.chains.iter_mut().enumerate() {
            chain.close(&self.devs[i], &self.sbs[i])?;
            out.push((core.logs[i].tail, chain.prev_footer));
        }
        drop(leader);
        drop(core);
        self.sync_devices(&vec![true; self.devs.len()])?;
        Ok(out)
    }

    // ----- namespace operations ---------------------------------------------------------

    /// Id of the root directory.
    pub fn root(&self) -> u64 {
        ROOT
    }

    /// Finds `name` in directory `dir`.
    pub fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64> {
        lock(&self.core).ns.lookup(dir, name)
    }

    /// Attributes of an entry.
    pub fn getattr(&self, id: u64) -> Result<Attr> {
        Ok(Attr::of(lock(&self.core).ns.get(id)?))
    }

    /// Path of an entry from the root, for messages and manifests.
    pub fn path(&self, id: u64) -> String {
        String::from_utf8_lossy(&lock(&self.core).ns.path(id)).into_owned()
    }

    /// Changes attributes (a size change truncates or extends the file).
    pub fn setattr(&self, id: u64, change: AttrChange) -> Result<Attr> {
        let _admitted = self.writable()?;
        let resize = change.size;
        let same_size = resize.map(|size| AttrChange {
            size: Some(size),
            ..AttrChange::default()
        }) == Some(change.clone());
        if same_size
            && let now = self.getattr(id)?
            && now.kind == Kind::File
            && Some(now.size) == resize
        {
            // A truncate to the current size changes nothing, not even the times (POSIX
            // updates them only when the size changes); `cp` and libnfs send one after every
            // create. Nothing to journal, but the state the reply reports must be durable:
            // commit whatever is queued (usually nothing, which returns at once).
            self.sync()?;
            return self.getattr(id);
        }
        self.submit(vec![Op::SetAttr {
            id,
            change,
            time: Time::now(),
        }])?;
        if let Some(size) = resize {
            self.digests.resized(id, size);
        }
        self.getattr(id)
    }

    fn create_entry(
        &self,
        dir: u64,
        name: &[u8],
        kind: Kind,
        mode: u32,
        target: &[u8],
    ) -> Result<Attr> {
        let _admitted = self.writable()?;
        check_name(name)?;
        if target.len() > MAX_SYMLINK {
            return Err(Error::Invalid(format!(
                "symlink target of {} bytes (at most {MAX_SYMLINK})",
                target.len()
            )));
        }
        let id = {
            let mut core = lock(&self.core);
            self.reserve_journal(&core, 1)?;
            let id = core.ns.next_id();
            let op = Op::Create {
                id,
                parent: dir,
                name: name.to_vec(),
                kind,
                mode,
                uid: 0,
                gid: 0,
                time: Time::now(),
                target: target.to_vec(),
            };
            core.ns.apply(&op)?;
            journal::encode_op(&op, &mut core.ops);
            let ticket = core.open_batch;
            drop(core);
            self.wait_durable(ticket)?;
            id
        };
        if kind == Kind::File && crate::digest::tracked_name(name) {
            self.digests.start(id);
        }
        self.getattr(id)
    }

    /// Creates an empty regular file; `Exists` if the name is taken.
    pub fn create(&self, dir: u64, name: &[u8], mode: u32) -> Result<Attr> {
        self.create_entry(dir, name, Kind::File, mode, b"")
    }

    /// Creates a directory.
    pub fn mkdir(&self, dir: u64, name: &[u8], mode: u32) -> Result<Attr> {
        self.create_entry(dir, name, Kind::Dir, mode, b"")
    }

    /// Creates a symbolic link.
    pub fn symlink(&self, dir: u64, name: &[u8], target: &[u8]) -> Result<Attr> {
        if target.is_empty() {
            return Err(Error::Invalid("empty symlink target".into()));
        }
        self.create_entry(dir, name, Kind::Symlink, 0o777, target)
    }

    /// Target of a symbolic link.
    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let core = lock(&self.core);
        let i = core.ns.get(id)?;
        if i.kind != Kind::Symlink {
            return Err(Error::Invalid("not a symbolic link".into()));
        }
        Ok(i.target.clone())
    }

    /// Removes a file or symlink (`IsDir` for a directory).
    pub fn remove(&self, dir: u64, name: &[u8]) -> Result<()> {
        self.remove_entry(dir, name, false)
    }

    /// Removes an empty directory (`NotDir` for anything else).
    pub fn rmdir(&self, dir: u64, name: &[u8]) -> Result<()> {
        self.remove_entry(dir, name, true)
    }

    fn remove_entry(&self, dir: u64, name: &[u8], want_dir: bool) -> Result<()> {
        let _admitted = self.writable()?;
        check_name(name)?;
        let ticket = {
            let mut core = lock(&self.core);
            self.reserve_journal(&core, 1)?;
            let id = core.ns.lookup(dir, name)?;
            let is_dir = core.ns.get(id)?.kind == Kind::Dir;
            if is_dir != want_dir {
                return Err(if is_dir { Error::IsDir } else { Error::NotDir });
            }
            let op = Op::Remove {
                parent: dir,
                name: name.to_vec(),
                time: Time::now(),
            };
            core.ns.apply(&op)?;
            journal::encode_op(&op, &mut core.ops);
            core.open_batch
        };
        self.wait_durable(ticket)
    }

    /// Moves `from_dir/from_name` to `to_dir/to_name`, replacing a compatible target.
    pub fn rename(
        &self,
        from_dir: u64,
        from_name: &[u8],
        to_dir: u64,
        to_name: &[u8],
    ) -> Result<()> {
        let _admitted = self.writable()?;
        check_name(from_name)?;
        check_name(to_name)?;
        self.submit(vec![Op::Rename {
            from_parent: from_dir,
            from_name: from_name.to_vec(),
            to_parent: to_dir,
            to_name: to_name.to_vec(),
            time: Time::now(),
        }])
    }

    /// Lists up to `max` entries of `dir` in name order, starting after the entry whose id is
    /// `after` (0 = from the start). Returns the entries and whether the listing is complete.
    pub fn readdir(&self, dir: u64, after: u64, max: usize) -> Result<(Vec<DirEntry>, bool)> {
        let core = lock(&self.core);
        let d = core.ns.get(dir)?;
        if d.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        // Resume after the cookie's name (entries are ordered by name); if it was removed or
        // moved away meanwhile, start over rather than fail.
        let from = match core.ns.get(after) {
            Ok(i) if after != 0 && i.parent == dir && d.entries.get(&i.name) == Some(&after) => {
                std::ops::Bound::Excluded(i.name.as_slice())
            }
            _ => std::ops::Bound::Unbounded,
        };
        let mut it = d
            .entries
            .range::<[u8], _>((from, std::ops::Bound::Unbounded))
            .peekable();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((name, &id)) = it.next() else { break };
            out.push(DirEntry {
                name: name.clone(),
                attr: Attr::of(core.ns.get(id)?),
            });
        }
        let end = it.peek().is_none();
        Ok((out, end))
    }

    /// Lists every entry of `dir` (for host tools).
    pub fn list(&self, dir: u64) -> Result<Vec<DirEntry>> {
        Ok(self.readdir(dir, 0, usize::MAX)?.0)
    }

    // ----- data -------------------------------------------------------------------------

    /// Writes `data` at `offset` of file `id` and returns when it is durable.
    pub fn write(&self, id: u64, offset: u64, data: &[u8]) -> Result<Attr> {
        self.write_with(id, offset, data, true)
    }

    /// Like [`Store::write`], but returns once the write is applied (reads see it) and
    /// queued, without waiting until it is durable: NFS UNSTABLE writes. [`Store::sync`]
    /// (NFS COMMIT) makes it durable; a crash before may lose it. The queue stays bounded:
    /// a writer that finds it full leads a commit first.
    pub fn write_unstable(&self, id: u64, offset: u64, data: &[u8]) -> Result<Attr> {
        self.write_with(id, offset, data, false)
    }

    fn write_with(&self, id: u64, offset: u64, data: &[u8], durable: bool) -> Result<Attr> {
        let _admitted = self.writable()?;
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > i64::MAX as u64)
        {
            return Err(Error::Invalid("write past the largest file offset".into()));
        }
        if data.is_empty() {
            return self.getattr(id);
        }
        {
            // Cheap early refusal (the authoritative check is under the lock below).
            let core = lock(&self.core);
            core.ns.file(id)?;
        }
        let built = self.build_records(id, offset, data);
        // Chaining values of the whole aligned blocks this write covers, for the manifest:
        // a block that is one record already has it; any other (holes, several records)
        // takes a BLAKE3 pass over its 1 MiB, done here rather than under the store lock.
        let mut block_cvs = Vec::new();
        let mut block_start = offset.next_multiple_of(BLOCK);
        while block_start + BLOCK <= offset + data.len() as u64 {
            let s = (block_start - offset) as usize;
            let cv = match built.iter().find(|b| b.offset == block_start) {
                Some(b) if b.len as u64 == BLOCK && b.bytes.is_some() => b.digest,
                _ => record_digest(block_start, &data[s..s + BLOCK as usize]),
            };
            block_cvs.push((block_start / BLOCK, cv));
            block_start += BLOCK;
        }
        let ticket = {
            let mut core = self.wait_for_queue_room()?;
            self.reserve_journal(&core, built.len() + 2)?;
            let need: u64 = built
                .iter()
                .filter_map(|b| b.bytes.as_ref())
                .map(|b| b.len() as u64 + segment::BLOCK)
                .sum();
            let free: u64 = core
                .logs
                .iter()
                .zip(&self.sbs)
                .map(|(l, sb)| l.free(sb))
                .sum();
            if need > free {
                return Err(Error::NoSpace(format!(
                    "the data devices are full ({free} bytes free, this write needs {need})"
                )));
            }
            core.ns.get(id)?;
            let time = Time::now();
            for b in &built {
                let loc = match &b.bytes {
                    None => None,
                    Some(bytes) => Some(self.place(&mut core, bytes)?),
                };
                let op = Op::Write {
                    id,
                    offset: b.offset,
                    len: b.len,
                    generation: b.generation,
                    loc,
                    hash: b.digest,
                    time,
                };
                core.ns.apply(&op)?;
                journal::encode_op(&op, &mut core.ops);
            }
            // Whole aligned blocks written at once keep their chaining value for the manifest.
            for &(block, cv) in &block_cvs {
                let op = Op::BlockCv { id, block, cv };
                core.ns.apply(&op)?;
                journal::encode_op(&op, &mut core.ops);
            }
            core.written_bytes += data.len() as u64;
            let kick = core.logs.iter().any(|l| l.pending_bytes > COMMIT_AT);
            (core.open_batch, kick)
        };
        if durable {
            self.wait_durable(ticket.0)?;
        } else if ticket.1 {
            self.commit_if_idle()?;
        }
        self.digests.wrote(id, offset, data);
        self.getattr(id)
    }

    /// The store lock, once the queue has room (bounded memory): when it is full, leads a
    /// commit if nobody does, else waits for the running one to end.
    fn wait_for_queue_room(&self) -> Result<MutexGuard<'_, Core>> {
        let mut core = lock(&self.core);
        while core.logs.iter().any(|l| l.pending_bytes > MAX_QUEUED) {
            drop(core);
            let c = lock(&self.commit);
            self.check_failed(&c)?;
            let c = if c.leading {
                self.commit_cv.wait(c).unwrap_or_else(|e| e.into_inner())
            } else {
                self.lead_with(c, false)
            };
            self.check_failed(&c)?;
            drop(c);
            core = lock(&self.core);
        }
        Ok(core)
    }

    fn place(&self, core: &mut Core, bytes: &[u8]) -> Result<Loc> {
        let n = self.devs.len();
        let mut last_err = None;
        for k in 0..n {
            let d = (core.next_dev + k) % n;
            match core.logs[d].append(&self.sbs[d], bytes) {
                Ok(addr) => {
                    core.next_dev = (d + 1) % n;
                    return Ok(Loc {
                        dev: d as u32,
                        addr,
                        len: bytes.len() as u32,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap())
    }

    /// Cuts a write into records (at most 1 MiB each, aligned to 1 MiB of file offset so that
    /// whole blocks stay whole), turns all-zero runs into holes, and builds each record.
    fn build_records(&self, id: u64, offset: u64, data: &[u8]) -> Vec<Built> {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let abs = offset + at as u64;
            let to_boundary = (BLOCK - abs % BLOCK) as usize;
            let n = to_boundary.min(data.len() - at).min(MAX_PLAIN);
            let chunk = &data[at..at + n];
            // Split the chunk into zero and non-zero runs on ZERO_GRAIN boundaries.
            let mut s = 0usize;
            while s < n {
                let grain_end = |p: usize| ((p / ZERO_GRAIN) + 1) * ZERO_GRAIN;
                let first_end = grain_end(s).min(n);
                let zero = is_zero(&chunk[s..first_end]);
                let mut e = first_end;
                while e < n {
                    let ne = grain_end(e).min(n);
                    if is_zero(&chunk[e..ne]) != zero {
                        break;
                    }
                    e = ne;
                }
                let piece = &chunk[s..e];
                let poff = abs + s as u64;
                let counter = self.counter.fetch_add(1, Ordering::Relaxed);
                let generation = ((self.epoch as u64) << 40) | (counter & ((1 << 40) - 1));
                let (digest, bytes) = if zero {
                    ([0u8; 32], None)
                } else {
                    let rec = record::build(
                        &self.record_key,
                        self.cipher,
                        &Binding {
                            file_id: id,
                            offset: poff,
                            generation,
                            session: self.session,
                            counter,
                        },
                        piece,
                    );
                    (record_digest(poff, piece), Some(rec))
                };
                out.push(Built {
                    offset: poff,
                    len: piece.len() as u32,
                    generation,
                    digest,
                    bytes,
                });
                s = e;
            }
            at += n;
        }
        out
    }

    /// Reads up to `len` bytes at `offset`; returns the bytes and whether the end of the file
    /// was reached. Every record is authenticated and its digest checked.
    pub fn read(&self, id: u64, offset: u64, len: u32) -> Result<(Vec<u8>, bool)> {
        let (size, pieces) = {
            let core = lock(&self.core);
            let i = core.ns.file(id)?;
            let end = (offset.saturating_add(len as u64)).min(i.size);
            if offset >= end {
                return Ok((Vec::new(), true));
            }
            (i.size, i.pieces(offset, end - offset))
        };
        let total: u64 = pieces.iter().map(|p| p.1).sum();
        let mut out = Vec::with_capacity(total as usize);
        for (at, n, ext) in pieces {
            match ext {
                None => out.resize(out.len() + n as usize, 0),
                Some(e) => {
                    let plain = self.record_plain(id, &e)?;
                    let s = (at - e.rec.start) as usize;
                    out.extend_from_slice(&plain[s..s + n as usize]);
                }
            }
        }
        let eof = offset + out.len() as u64 >= size;
        Ok((out, eof))
    }

    /// Decrypted, checked plaintext of the record behind an extent (cached).
    pub(crate) fn record_plain(&self, id: u64, e: &Extent) -> Result<Arc<Vec<u8>>> {
        let key = (e.rec.loc.dev, e.rec.loc.addr);
        if let Some((_, p)) = lock(&self.cache).iter().find(|(k, _)| *k == key) {
            return Ok(p.clone());
        }
        let loc = e.rec.loc;
        let queued = lock(&self.core)
            .logs
            .get(loc.dev as usize)
            .and_then(|l| l.queued(loc.addr, loc.len as usize));
        let damaged = |why: String| Error::Damaged {
            file: self.path(id),
            start: e.rec.start,
            end: e.rec.start + e.rec.plain_len as u64,
            why,
        };
        let mut bytes = match queued {
            Some(b) => b,
            None => self
                .device_of(loc)
                .and_then(|dev| {
                    dev.read_vec(loc.addr, loc.len as usize)
                        .map_err(|err| format!("cannot read the record: {err}"))
                })
                .map_err(damaged)?,
        };
        let mut plain = vec![0u8; e.rec.plain_len as usize];
        self.open_record(id, e, &mut bytes, &mut plain)
            .map_err(damaged)?;
        let plain = Arc::new(plain);
        let mut cache = lock(&self.cache);
        if cache.len() >= READ_CACHE {
            cache.remove(0);
        }
        cache.push((key, plain.clone()));
        Ok(plain)
    }

    fn device_of(&self, loc: Loc) -> std::result::Result<&Device, String> {
        self.devs
            .get(loc.dev as usize)
            .ok_or_else(|| format!("record on device {} which is not attached", loc.dev + 1))
    }

    /// Opens the record behind `e` (its bytes in `bytes`, decrypted in place) into `out`
    /// (`e.rec.plain_len` bytes) and checks that it is this extent's record: binding,
    /// length and plaintext digest. The error is the reason, for [`Error::Damaged`].
    fn open_record(
        &self,
        id: u64,
        e: &Extent,
        bytes: &mut [u8],
        out: &mut [u8],
    ) -> std::result::Result<(), String> {
        let loc = e.rec.loc;
        let at = |er: record::RecordError| {
            format!("record at device {} byte {}: {er}", loc.dev + 1, loc.addr)
        };
        let h = record::Header::decode(bytes).map_err(at)?;
        if h.plain_len != e.rec.plain_len {
            return Err("plaintext digest mismatch".into());
        }
        let rkey = if h.session == self.session {
            None
        } else {
            Some(self.key_for_session(h.session, Purpose::Record))
        };
        let h = record::open_into(rkey.as_deref().unwrap_or(&self.record_key), bytes, out)
            .map_err(at)?;
        if h.file_id != id || h.offset != e.rec.start || h.generation != e.rec.generation {
            return Err(format!(
                "record at device {} byte {} belongs to file {} offset {} generation {:#x}, \
                 not to this file's offset {} generation {:#x} (swapped or replayed)",
                loc.dev + 1,
                loc.addr,
                h.file_id,
                h.offset,
                h.generation,
                e.rec.start,
                e.rec.generation
            ));
        }
        if record_digest(h.offset, out) != e.rec.hash {
            return Err("plaintext digest mismatch".into());
        }
        Ok(())
    }

    /// Reads file `id` from `offset` into `buf` in bulk: every record is authenticated and
    /// its digest checked as by [`Store::read`], but records adjacent on a device are read
    /// with one large `pread` and whole records are decrypted and decompressed straight into
    /// `buf` (no intermediate copies, no read cache). Holes read as zeros. A damaged record
    /// does not stop the read: its bytes in `buf` are zeroed and it is listed, with the
    /// file and the range of this read it covers. Bytes past the end of the file are left
    /// untouched; [`BulkRead::len`] says how many were filled.
    pub fn read_into(
        &self,
        id: u64,
        offset: u64,
        buf: &mut [u8],
        scratch: &mut ReadScratch,
    ) -> Result<BulkRead> {
        let (pieces, queued) = {
            let core = lock(&self.core);
            let i = core.ns.file(id)?;
            let end = offset.saturating_add(buf.len() as u64).min(i.size);
            if offset >= end {
                return Ok(BulkRead::default());
            }
            let pieces = i.pieces(offset, end - offset);
            // Records still queued for the device (a writable store) are served from memory.
            let queued: Vec<Option<Vec<u8>>> = pieces
                .iter()
                .map(|(_, _, e)| {
                    e.and_then(|e| {
                        core.logs
                            .get(e.rec.loc.dev as usize)
                            .and_then(|l| l.queued(e.rec.loc.addr, e.rec.loc.len as usize))
                    })
                })
                .collect();
            (pieces, queued)
        };
        let mut out = BulkRead {
            len: pieces.iter().map(|p| p.1).sum::<u64>() as usize,
            damaged: Vec::new(),
        };
        let mut k = 0;
        while k < pieces.len() {
            let (at, n, ext) = pieces[k];
            let s = (at - offset) as usize;
            let Some(e) = ext else {
                buf[s..s + n as usize].fill(0);
                k += 1;
                continue;
            };
            // A run of records that follow each other on one device: one read.
            let mut stop = k + 1;
            let mut run_len = e.rec.loc.len as usize;
            if queued[k].is_none() {
                while let Some((_, _, Some(next))) = pieces.get(stop) {
                    let prev = pieces[stop - 1].2.expect("in a run").rec.loc;
                    if queued[stop].is_some()
                        || next.rec.loc.dev != prev.dev
                        || next.rec.loc.addr != prev.addr + prev.len as u64
                        || run_len + next.rec.loc.len as usize > BULK_READ_MAX
                    {
                        break;
                    }
                    run_len += next.rec.loc.len as usize;
                    stop += 1;
                }
            }
            let fetched: std::result::Result<(), String> = match &queued[k] {
                Some(b) => {
                    scratch.rec.clear();
                    scratch.rec.extend_from_slice(b);
                    Ok(())
                }
                None => {
                    scratch.rec.resize(run_len, 0);
                    self.device_of(e.rec.loc).and_then(|dev| {
                        dev.read_at(&mut scratch.rec[..run_len], e.rec.loc.addr)
                            .map_err(|err| format!("cannot read the record: {err}"))
                    })
                }
            };
            let mut rec_at = 0usize;
            for (at, n, e) in &pieces[k..stop] {
                let e = e.expect("in a run");
                let (s, n) = ((at - offset) as usize, *n as usize);
                let rec = &mut scratch.rec[rec_at..rec_at + e.rec.loc.len as usize];
                rec_at += e.rec.loc.len as usize;
                let whole = *at == e.rec.start && n == e.rec.plain_len as usize;
                let opened = fetched.clone().and_then(|()| {
                    if whole {
                        self.open_record(id, &e, rec, &mut buf[s..s + n])
                    } else {
                        // Part of a record: open it aside, keep the part asked for.
                        scratch.plain.resize(e.rec.plain_len as usize, 0);
                        self.open_record(id, &e, rec, &mut scratch.plain)?;
                        let from = (at - e.rec.start) as usize;
                        buf[s..s + n].copy_from_slice(&scratch.plain[from..from + n]);
                        Ok(())
                    }
                });
                if let Err(why) = opened {
                    buf[s..s + n].fill(0);
                    let (start, end) = (*at, at + n as u64);
                    match out.damaged.last_mut() {
                        Some(d) if d.end == start && d.why == why => d.end = end,
                        _ => out.damaged.push(crate::verify::Damage {
                            path: self.path(id),
                            start,
                            end,
                            why,
                        }),
                    }
                }
            }
            k = stop;
        }
        Ok(out)
    }

    /// SHA-256 of a file computed as its bytes arrived, if they arrived whole and in order
    /// since this run began (see [`crate::digest`]).
    pub fn sha256_on_the_way_in(&self, id: u64, size: u64) -> Option<[u8; 32]> {
        self.digests.sha256(id, size)
    }

    /// Runs `f` with the namespace (for manifests and ingest walks).
    pub fn with_namespace<R>(&self, f: impl FnOnce(&Namespace) -> R) -> R {
        f(&lock(&self.core).ns)
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
        for (l, sb) in core.logs.iter().zip(&self.sbs) {
            s.free_bytes += l.free(sb);
            s.capacity_bytes += sb.segment_count() * (sb.segment_size - 2 * segment::BLOCK);
            if let Some(seg) = l.segment(sb) {
                s.log_bytes += seg * sb.segment_size + (l.tail - sb.segment_start(seg));
            }
        }
        s.journal_used = core.journal_end + core.ops.len() as u64;
        s.journal_len = self.sbs[0].journal_len;
        s.written_bytes = core.written_bytes;
        s
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.access == Access::ReadWrite
            && let Err(e) = self.sync()
        {
            tracing::error!(error = %e, "final sync failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_written_looks_at_every_sector_share() {
        let batch = vec![0xa5u8; 1500];
        // Starting 100 bytes before a sector boundary: shares of 100, 512, 512 and 376 bytes.
        assert!(fully_written(412, &batch));
        for hole in [0..100, 100..612, 1124..1500] {
            let mut torn = batch.clone();
            torn[hole.clone()].fill(0);
            assert!(!fully_written(412, &torn), "hole {hole:?}");
        }
        // Zeros that do not cover a whole share are data, not a tear.
        let mut zeros = batch.clone();
        zeros[50..600].fill(0);
        assert!(fully_written(412, &zeros));
    }

    #[test]
    fn torn_records_are_told_from_damaged_ones() {
        // A record at 500: magic and header across the boundary at 512, body from 564.
        let mut rec = vec![0x5au8; 3000];
        rec[..4].copy_from_slice(b"ODTR");
        rec[8..60].fill(0); // header fields may well be zeros
        assert!(!torn_record(500, &rec));
        let mut damaged = rec.clone();
        damaged[1000] ^= 4;
        assert!(!torn_record(500, &damaged), "a flipped bit is damage");
        let mut no_magic = rec.clone();
        no_magic[..12].fill(0); // the sector before 512 never written
        assert!(torn_record(500, &no_magic));
        let mut hole = rec.clone();
        hole[1036..1548].fill(0); // the sector at 1536 never written
        assert!(torn_record(500, &hole));
        let mut tail = rec.clone();
        tail[2572..].fill(0); // the last sector's share (428 bytes) never written
        assert!(torn_record(500, &tail));
        let mut few = rec.clone();
        few[2996..].fill(0); // zeros inside a sector's share are data
        assert!(!torn_record(500, &few));
    }

    fn geometry(segment_size: u64) -> Superblock {
        Superblock {
            format_version: superblock::FORMAT_VERSION,
            set_id: 1,
            job_id: "job".into(),
            job_name: "job".into(),
            device_index: 0,
            device_count: 1,
            device_size: 1 << 30,
            segment_size,
            journal_len: 16 << 20,
            cipher: Cipher::Aes256Gcm,
            created_unix: 0,
            signing_public: [0; 32],
            wrapped_for_ingest: Vec::new(),
            wrapped_for_customer: Vec::new(),
            tls: crate::tls::TlsIdentity {
                cert_der: Vec::new(),
                key_der: crate::tls::SecretBytes(Vec::new()),
                spki_sha256: [0; 32],
            },
        }
    }

    #[test]
    fn one_sync_only_for_small_batches_inside_their_segments() {
        let sbs = [geometry(64 << 20), geometry(64 << 20)];
        let s0 = sbs[0].segment_start(0);
        let s1 = sbs[0].segment_start(1);
        // Metadata only, or a few records in the open segment: one sync.
        assert!(one_sync(&sbs, &[s0 + 10, 0], &[s0 + 10, 0]));
        assert!(one_sync(
            &sbs,
            &[s0 + 10, s0 + 4],
            &[s0 + 20_000, s0 + 9_000]
        ));
        assert!(one_sync(&sbs, &[s0 + 10, 0], &[s0 + 10 + ONE_SYNC_MAX, 0]));
        // Too many bytes for recovery to check, even spread over devices.
        assert!(!one_sync(&sbs, &[s0 + 10, 0], &[s0 + 11 + ONE_SYNC_MAX, 0]));
        let half = ONE_SYNC_MAX / 2 + 1;
        assert!(!one_sync(
            &sbs,
            &[s0 + 1, s0 + 1],
            &[s0 + 1 + half, s0 + 1 + half]
        ));
        // A first record on a device, or one in a new segment (a footer was written).
        assert!(!one_sync(&sbs, &[s0 + 10, 0], &[s0 + 10, s0 + 100]));
        assert!(!one_sync(&sbs, &[s1 - 4096, 0], &[s1 + 100, 0]));
        // A segment filled exactly is still that segment.
        let end0 = s1 - segment::BLOCK;
        assert!(one_sync(&sbs, &[end0 - 100, 0], &[end0, 0]));
    }
}
