//! Moving file bytes from the store to the datastore with every core busy.
//!
//! Work is cut into chunks of [`CHUNK`] bytes of file offset, queued in path order, and
//! taken by a small pool of workers, so that a single large disk image keeps every worker
//! busy and the device is still read front to back. Each worker reads (the store
//! authenticates, decrypts, decompresses and checks every record), writes with `pwrite`
//! into the file's temporary (holes are skipped, so sparse files stay sparse) and hashes
//! each 1 MiB block at its offset. Whoever finishes a file's last chunk checks the file's
//! BLAKE3 root, then commits it (sync, rename, sync the directory) or, if any range was
//! unreadable, quarantines it.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use odt_store::Store;
use serde::Serialize;

use super::datastore::{Datastore, Stager, Temp};
use super::error::IngestError;
use super::file_hash::{self, BLOCK};
use super::plan::PlannedFile;
use super::state::{DoneEntry, State};

/// Bytes of file offset per work item.
pub const CHUNK: u64 = 8 * BLOCK;
/// Work items whose records are asked for ahead of time.
const LOOKAHEAD: usize = 4;

/// A byte range of a file that could not be read back intact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostRange {
    pub start: u64,
    pub end: u64,
    pub why: String,
}

/// A file that was not written, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Path on the device.
    pub path: String,
    /// Where it would have gone in the datastore.
    pub datastore_path: String,
    pub size: u64,
    /// One sentence.
    pub why: String,
    /// The damaged ranges (empty if the content as a whole failed its sealed hash).
    pub damaged: Vec<LostRange>,
}

/// What the transfer did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Files committed: (index into the given files, BLAKE3 root).
    pub written: Vec<(usize, [u8; 32])>,
    pub quarantined: Vec<Quarantined>,
    /// Bytes read from records (holes not counted).
    pub data_bytes: u64,
}

struct FileRun {
    temp: Mutex<Option<Arc<Temp>>>,
    remaining: AtomicUsize,
    values: Mutex<Vec<[u8; 32]>>,
    damaged: AtomicBool,
    lost: Mutex<Vec<LostRange>>,
}

impl FileRun {
    fn new(f: &PlannedFile) -> FileRun {
        let blocks = f.size.div_ceil(BLOCK).max(1) as usize;
        FileRun {
            temp: Mutex::new(None),
            remaining: AtomicUsize::new(f.size.div_ceil(CHUNK).max(1) as usize),
            values: Mutex::new(vec![[0; 32]; blocks]),
            damaged: AtomicBool::new(false),
            lost: Mutex::new(Vec::new()),
        }
    }

    fn temp(&self, ds: &Datastore, f: &PlannedFile) -> Result<Arc<Temp>, IngestError> {
        let mut t = self.temp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &*t {
            return Ok(t.clone());
        }
        let new = Arc::new(ds.create_temp(f.id, f.size)?);
        *t = Some(new.clone());
        Ok(new)
    }

    fn lose(&self, start: u64, end: u64, why: String) {
        self.damaged.store(true, Ordering::Release);
        let mut l = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match l.last_mut() {
            Some(r) if r.end == start && r.why == why => r.end = end,
            _ => l.push(LostRange { start, end, why }),
        }
    }
}

/// Files renamed into place whose directories are not synced yet: one directory fsync
/// then covers many small files. A file is recorded as done only after that fsync.
#[derive(Default)]
struct Pending {
    files: Vec<(usize, [u8; 32], DoneEntry)>,
    dirs: BTreeSet<Vec<OsString>>,
    since: Option<Instant>,
}

/// Pending files that trigger a directory sync.
const SYNC_BATCH: usize = 32;
/// Longest a finished file waits for its directory sync.
const SYNC_DELAY: Duration = Duration::from_millis(500);

/// A worker's buffers.
struct Scratch {
    /// The 1 MiB block being hashed.
    block: Vec<u8>,
    /// Gathers the chunk's aligned pieces into large `O_DIRECT` writes.
    stager: Stager,
}

/// Everything the workers share.
pub struct Transfer<'a> {
    pub store: &'a Store,
    pub ds: &'a Datastore,
    pub state: &'a State,
    pub files: &'a [&'a PlannedFile],
    /// BLAKE3 roots the seal recorded, by file id (none if the store is not sealed).
    pub sealed_roots: Option<&'a HashMap<u64, [u8; 32]>>,
    pub progress: &'a ProgressBar,
}

impl Transfer<'_> {
    /// Runs the transfer with `jobs` workers.
    pub fn run(&self, jobs: usize) -> Result<Outcome, IngestError> {
        let mut tasks: Vec<(usize, u64, u64)> = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if f.size == 0 {
                tasks.push((i, 0, 0));
            }
            let mut at = 0;
            while at < f.size {
                let n = CHUNK.min(f.size - at);
                tasks.push((i, at, n));
                at += n;
            }
        }
        let runs: Vec<FileRun> = self.files.iter().map(|f| FileRun::new(f)).collect();
        // A second read-only descriptor per device for read-ahead hints: the workers'
        // interleaved record reads defeat the kernel's own sequential detection.
        let hints: Vec<Option<File>> = self
            .store
            .devices()
            .iter()
            .map(|d| File::open(d.path()).ok())
            .collect();
        let prefetch = |k: usize| {
            if let Some(&(fi, off, len)) = tasks.get(k) {
                for r in self.files[fi].records(off, len) {
                    if let Some(Some(f)) = hints.get(r.dev as usize) {
                        let _ = rustix::fs::fadvise(
                            f,
                            r.addr,
                            std::num::NonZeroU64::new(r.len as u64),
                            rustix::fs::Advice::WillNeed,
                        );
                    }
                }
            }
        };
        (0..LOOKAHEAD).for_each(prefetch);
        let next = AtomicUsize::new(0);
        let abort = AtomicBool::new(false);
        let data_bytes = AtomicU64::new(0);
        let outcome = Mutex::new(Outcome::default());
        let pending = Mutex::new(Pending::default());
        let first_error: Mutex<Option<IngestError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..jobs.max(1) {
                s.spawn(|| {
                    let mut scratch = Scratch {
                        block: vec![0u8; BLOCK as usize],
                        stager: Stager::new(CHUNK as usize),
                    };
                    while !abort.load(Ordering::Acquire) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(fi, off, len)) = tasks.get(k) else {
                            break;
                        };
                        prefetch(k + LOOKAHEAD);
                        let r = self
                            .chunk(fi, &runs[fi], off, len, &mut scratch, &data_bytes)
                            .and_then(|()| {
                                if runs[fi].remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                                    self.finish(fi, &runs[fi], &outcome, &pending)
                                } else {
                                    Ok(())
                                }
                            });
                        if let Err(e) = r {
                            abort.store(true, Ordering::Release);
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let rest = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.flush(rest, &outcome)?;
        let mut out = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
        out.data_bytes = data_bytes.load(Ordering::Relaxed);
        out.written.sort_by_key(|(i, _)| *i);
        out.quarantined.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Reads, writes and hashes `[off, off+len)` of file `fi`.
    fn chunk(
        &self,
        fi: usize,
        run: &FileRun,
        off: u64,
        len: u64,
        scratch: &mut Scratch,
        data_bytes: &AtomicU64,
    ) -> Result<(), IngestError> {
        let f = self.files[fi];
        let temp = if run.damaged.load(Ordering::Acquire) {
            None
        } else {
            Some(run.temp(self.ds, f)?)
        };
        scratch.stager.discard();
        let mut block_start = off;
        loop {
            let blen = BLOCK.min(off + len - block_start);
            let block = &mut scratch.block[..blen as usize];
            // A block that is one whole record needs no second hash: the store checked the
            // record's plaintext against this very chaining value when reading it.
            let known = f.block_digest(block_start);
            if known.is_none() {
                block.fill(0);
            }
            for (at, n, backed) in f.pieces(block_start, blen) {
                if !backed {
                    continue;
                }
                let (s, e) = ((at - block_start) as usize, (at - block_start + n) as usize);
                match self.store.read(f.id, at, n as u32) {
                    Ok((data, _)) if data.len() as u64 == n => {
                        if known.is_none() {
                            block[s..e].copy_from_slice(&data);
                        }
                        if let Some(t) = &temp
                            && !run.damaged.load(Ordering::Acquire)
                        {
                            scratch.stager.write(t, &data, at).map_err(|err| {
                                IngestError::Datastore {
                                    op: "write",
                                    path: format!("the temporary of {}", f.rel_display()),
                                    source: err,
                                }
                            })?;
                        }
                    }
                    Ok((data, _)) => run.lose(
                        at,
                        at + n,
                        format!("the store returned {} bytes instead of {n}", data.len()),
                    ),
                    Err(odt_store::Error::Damaged { why, .. }) => run.lose(at, at + n, why),
                    Err(other) => return Err(other.into()),
                }
                data_bytes.fetch_add(n, Ordering::Relaxed);
                self.progress.inc(n);
            }
            let v = known.unwrap_or_else(|| file_hash::block_value(f.size, block_start, block));
            run.values.lock().unwrap_or_else(|p| p.into_inner())[(block_start / BLOCK) as usize] =
                v;
            block_start += blen;
            if block_start >= off + len {
                break;
            }
        }
        if let Some(t) = &temp {
            scratch
                .stager
                .flush(t)
                .map_err(|err| IngestError::Datastore {
                    op: "write",
                    path: format!("the temporary of {}", f.rel_display()),
                    source: err,
                })?;
        }
        // Start writing this chunk's buffered pieces back now (and drop them from the cache
        // once written), so that the final fsync has little left to do.
        if let (Some(t), Some(n)) = (&temp, std::num::NonZeroU64::new(len)) {
            let _ = rustix::fs::fadvise(&t.file, off, Some(n), rustix::fs::Advice::DontNeed);
        }
        Ok(())
    }

    /// Commits or quarantines a file whose chunks are all done.
    fn finish(
        &self,
        fi: usize,
        run: &FileRun,
        outcome: &Mutex<Outcome>,
        pending: &Mutex<Pending>,
    ) -> Result<(), IngestError> {
        let f = self.files[fi];
        let temp = run.temp.lock().unwrap_or_else(|p| p.into_inner()).take();
        let quarantine = |why: String, damaged: Vec<LostRange>| Quarantined {
            path: f.device_path.clone(),
            datastore_path: f.rel_display(),
            size: f.size,
            why,
            damaged,
        };
        if run.damaged.load(Ordering::Acquire) {
            if let Some(t) = temp {
                self.ds.discard_temp(&t.name);
            }
            let lost = std::mem::take(&mut *run.lost.lock().unwrap_or_else(|p| p.into_inner()));
            let bytes: u64 = lost.iter().map(|r| r.end - r.start).sum();
            let q = quarantine(
                format!(
                    "{bytes} bytes in {} range(s) are damaged on the device",
                    lost.len()
                ),
                lost,
            );
            outcome
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .quarantined
                .push(q);
            return Ok(());
        }
        let root = file_hash::root(&run.values.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(roots) = self.sealed_roots {
            let why = match roots.get(&f.id) {
                Some(want) if *want == root => None,
                Some(want) => Some(format!(
                    "its content hashes to BLAKE3 {} but the seal recorded {}",
                    hex::encode(root),
                    hex::encode(want)
                )),
                None => {
                    Some("the seal records no BLAKE3 root for it (added after the seal?)".into())
                }
            };
            if let Some(why) = why {
                if let Some(t) = temp {
                    self.ds.discard_temp(&t.name);
                }
                outcome
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .quarantined
                    .push(quarantine(why, Vec::new()));
                return Ok(());
            }
        }
        let t = temp.expect("every file's first chunk creates its temporary");
        self.ds
            .commit_file(&t.name, &t.file, f.size, f.mode, f.atime, f.mtime, &f.rel)?;
        let entry = DoneEntry {
            id: f.id,
            fingerprint: hex::encode(f.fingerprint),
            path: f.rel_display(),
            size: f.size,
            blake3: hex::encode(root),
        };
        let batch = {
            let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
            p.files.push((fi, root, entry));
            p.dirs.insert(f.rel[..f.rel.len() - 1].to_vec());
            let since = *p.since.get_or_insert_with(Instant::now);
            let due =
                p.files.len() >= SYNC_BATCH || since.elapsed() >= SYNC_DELAY || f.size >= CHUNK;
            due.then(|| std::mem::take(&mut *p))
        };
        match batch {
            Some(b) => self.flush(b, outcome),
            None => Ok(()),
        }
    }

    /// Syncs the directories of a batch of renamed files, then records them as done.
    fn flush(&self, batch: Pending, outcome: &Mutex<Outcome>) -> Result<(), IngestError> {
        for d in &batch.dirs {
            self.ds.sync_dir(d)?;
        }
        for (fi, root, entry) in batch.files {
            self.state.record(&entry)?;
            outcome
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .written
                .push((fi, root));
        }
        Ok(())
    }
}
