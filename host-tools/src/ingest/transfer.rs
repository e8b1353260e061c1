//! Moving file bytes from the store to the datastore with every core busy.
//!
//! Work is cut into spans of [`SPAN`] bytes of file offset, queued in path order, and
//! taken by a small pool of decoding workers, so that a single large disk image keeps every
//! core busy and the device is still read front to back. A worker reads the span with the
//! store's bulk read (runs of adjacent records in one `pread`; every record authenticated,
//! decrypted, decompressed and checked straight into the span's buffer), hashes each chunk
//! at its offset ([`tree_hash`]), and hands the buffer to the writer threads. The writers write the
//! span's data ranges into the file's temporary (holes are skipped, so sparse files stay
//! sparse) and start their write-back at once, while the workers decode the next spans:
//! compute and disk writes overlap. Whoever writes a file's last span checks the file's BLAKE3
//! root, then commits it (sync, rename, sync the directory) or, if any range was
//! unreadable, quarantines it. A fixed set of buffers bounds the memory and makes the
//! workers wait when the disk falls behind.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use odt_store::{ReadScratch, Store};
use serde::Serialize;

use odt_store::format::tree_hash::{self, CHUNK};

use super::datastore::{AlignedBuf, Datastore, Temp};
use super::error::IngestError;
use super::plan::PlannedFile;
use super::state::{DoneEntry, State};

/// Bytes of file offset per work item.
pub const SPAN: u64 = 8 * CHUNK;
/// Work items whose records are asked for ahead of time.
const LOOKAHEAD: usize = 4;
/// Threads writing decoded spans (they mostly wait for the disk, so more than one keeps a
/// write in flight while another thread syncs a finished file).
const WRITERS: usize = 2;
/// Span buffers per thread: enough for every worker to decode the next span while the
/// writers have one queued and one being written.
const BUFFERS_PER_THREAD: usize = 2;

/// A byte range of a file that could not be read back intact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostRange {
    /// First byte lost.
    pub start: u64,
    /// Byte after the last one lost.
    pub end: u64,
    /// Why, as one sentence.
    pub why: String,
}

/// A file that was not written, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Path on the device.
    pub path: String,
    /// Where it would have gone in the datastore.
    pub datastore_path: String,
    /// Size in bytes.
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
    /// Files not written, and why.
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

impl WriteJob {
    fn buf_bytes(&self) -> &[u8] {
        self.buf.bytes()
    }
}

impl FileRun {
    fn new(f: &PlannedFile) -> FileRun {
        let chunks = f.size.div_ceil(CHUNK).max(1) as usize;
        FileRun {
            temp: Mutex::new(None),
            remaining: AtomicUsize::new(f.size.div_ceil(SPAN).max(1) as usize),
            values: Mutex::new(vec![[0; 32]; chunks]),
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

/// Finished files not yet durable under their final names. A small file waits here
/// unsynced under its temporary name (its write-back started): the batch's fsyncs then
/// find their data written and share one journal commit, each file is renamed after its
/// own fsync, and one directory fsync covers the batch's renames. A file is recorded as
/// done only after that directory fsync.
#[derive(Default)]
struct Pending {
    files: Vec<PendingFile>,
    dirs: BTreeSet<Vec<OsString>>,
    since: Option<Instant>,
}

/// (file index, BLAKE3 root, state entry, the temporary if not yet renamed)
type PendingFile = (usize, [u8; 32], DoneEntry, Option<Arc<Temp>>);

/// Pending files that trigger a directory sync.
const SYNC_BATCH: usize = 32;
/// Longest a finished file waits for its directory sync.
const SYNC_DELAY: Duration = Duration::from_millis(500);

/// A decoded span waiting to be written.
struct WriteJob {
    fi: usize,
    off: u64,
    len: u64,
    buf: AlignedBuf,
    /// Bytes of the span backed by records (for the progress bar).
    data: u64,
    /// None if the file is already known to be damaged (nothing to write).
    temp: Option<Arc<Temp>>,
}

/// The span buffers, and the queue between the workers and the writers.
struct Pipe {
    state: Mutex<PipeState>,
    /// Signalled when a buffer is returned, a job queued, the workers are all done, or the
    /// transfer is aborted.
    cv: Condvar,
}

struct PipeState {
    free: Vec<AlignedBuf>,
    jobs: VecDeque<WriteJob>,
    workers_left: usize,
    aborted: bool,
}

impl Pipe {
    fn new(buffers: usize, workers: usize) -> Pipe {
        Pipe {
            state: Mutex::new(PipeState {
                free: (0..buffers)
                    .map(|_| AlignedBuf::new(SPAN as usize))
                    .collect(),
                jobs: VecDeque::new(),
                workers_left: workers,
                aborted: false,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free buffer, waiting for one; None once the transfer is aborted.
    fn take_buf(&self) -> Option<AlignedBuf> {
        let mut st = self.lock();
        loop {
            if st.aborted {
                return None;
            }
            if let Some(b) = st.free.pop() {
                return Some(b);
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn put_buf(&self, b: AlignedBuf) {
        self.lock().free.push(b);
        self.cv.notify_all();
    }

    fn push(&self, j: WriteJob) {
        self.lock().jobs.push_back(j);
        self.cv.notify_all();
    }

    /// The next job; None when the workers are done and nothing is left.
    fn pop(&self) -> Option<WriteJob> {
        let mut st = self.lock();
        loop {
            if let Some(j) = st.jobs.pop_front() {
                return Some(j);
            }
            if st.workers_left == 0 {
                return None;
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn abort(&self) {
        self.lock().aborted = true;
        self.cv.notify_all();
    }
}

/// Counts a worker out of the pipe when it stops, even by panic (so the writers end).
struct WorkerGuard<'a>(&'a Pipe);

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().workers_left -= 1;
        self.0.cv.notify_all();
    }
}

/// Everything the workers share.
pub struct Transfer<'a> {
    /// The store, read-only.
    pub store: &'a Store,
    /// The datastore written into.
    pub ds: &'a Datastore,
    /// The resume state (finished files are recorded there).
    pub state: &'a State,
    /// The files to transfer.
    pub files: &'a [&'a PlannedFile],
    /// BLAKE3 roots the seal recorded, by file id (none if the store is not sealed).
    pub sealed_roots: Option<&'a HashMap<u64, [u8; 32]>>,
    /// The progress bar, advanced by bytes written.
    pub progress: &'a Progress,
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
                let n = SPAN.min(f.size - at);
                tasks.push((i, at, n));
                at += n;
            }
        }
        let runs: Vec<FileRun> = self.files.iter().map(|f| FileRun::new(f)).collect();
        // A second read-only descriptor per device for read-ahead hints: the workers'
        // interleaved reads defeat the kernel's own sequential detection.
        let hints: Vec<Option<File>> = self
            .store
            .devices()
            .iter()
            .map(|d| File::open(d.path()).ok())
            .collect();
        let prefetch = |k: usize| {
            let Some(&(fi, off, len)) = tasks.get(k) else {
                return;
            };
            // One hint per run of records adjacent on a device.
            let mut run: Option<(u32, u64, u64)> = None;
            let hint = |(dev, addr, end): (u32, u64, u64)| {
                if let Some(Some(f)) = hints.get(dev as usize) {
                    let _ = rustix::fs::fadvise(
                        f,
                        addr,
                        std::num::NonZeroU64::new(end - addr),
                        rustix::fs::Advice::WillNeed,
                    );
                }
            };
            for r in self.files[fi].records(off, len) {
                let end = r.addr + r.len as u64;
                run = match run {
                    Some((d, a, e)) if d == r.dev && e == r.addr => Some((d, a, end)),
                    Some(prev) => {
                        hint(prev);
                        Some((r.dev, r.addr, end))
                    }
                    None => Some((r.dev, r.addr, end)),
                };
            }
            if let Some(r) = run {
                hint(r);
            }
        };
        (0..LOOKAHEAD).for_each(prefetch);
        let workers = jobs.max(1);
        let pipe = Pipe::new((workers + WRITERS) * BUFFERS_PER_THREAD, workers);
        let next = AtomicUsize::new(0);
        let data_bytes = AtomicU64::new(0);
        let outcome = Mutex::new(Outcome::default());
        let pending = Mutex::new(Pending::default());
        let first_error: Mutex<Option<IngestError>> = Mutex::new(None);
        let fail = |e: IngestError| {
            first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
            pipe.abort();
        };
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    let _guard = WorkerGuard(&pipe);
                    let mut scratch = ReadScratch::default();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(fi, off, len)) = tasks.get(k) else {
                            break;
                        };
                        prefetch(k + LOOKAHEAD);
                        let Some(mut buf) = pipe.take_buf() else {
                            break;
                        };
                        match self.decode(fi, &runs[fi], off, len, &mut buf, &mut scratch) {
                            Ok((temp, n)) => {
                                data_bytes.fetch_add(n, Ordering::Relaxed);
                                pipe.push(WriteJob {
                                    fi,
                                    off,
                                    len,
                                    buf,
                                    data: n,
                                    temp,
                                });
                            }
                            Err(e) => {
                                fail(e);
                                break;
                            }
                        }
                    }
                });
            }
            for _ in 0..WRITERS {
                s.spawn(|| {
                    // Keeps taking jobs after an error, so that no worker waits for a buffer
                    // forever; only the writing stops.
                    while let Some(job) = pipe.pop() {
                        let failed = first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .is_some();
                        let r = if failed {
                            Ok(())
                        } else {
                            self.write(&runs[job.fi], &job).and_then(|()| {
                                let run = &runs[job.fi];
                                if run.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                                    self.finish(job.fi, run, &outcome, &pending)
                                } else {
                                    Ok(())
                                }
                            })
                        };
                        self.progress.inc(job.data);
                        pipe.put_buf(job.buf);
                        if let Err(e) = r {
                            fail(e);
                        }
                    }
                });
            }
        });
        let rest = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            // Give back the space of files left half-written (after a full disk, say), and
            // keep the finished ones waiting for their batch if they can still be committed.
            // A kill leaves temporaries instead: the next run's `Datastore::open` removes them.
            for run in &runs {
                if let Some(t) = run.temp.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    self.ds.discard_temp(&t.name);
                }
            }
            let names: Vec<String> = rest
                .files
                .iter()
                .filter_map(|(_, _, _, t)| t.as_ref().map(|t| t.name.clone()))
                .collect();
            if self.flush(rest, &outcome).is_err() {
                // Those renamed already are gone from the temporary directory.
                names.iter().for_each(|n| self.ds.discard_temp(n));
            }
            return Err(e);
        }
        self.flush(rest, &outcome)?;
        let mut out = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
        out.data_bytes = data_bytes.load(Ordering::Relaxed);
        out.written.sort_by_key(|(i, _)| *i);
        out.quarantined.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Reads and hashes `[off, off+len)` of file `fi` into `buf`; returns the file's
    /// temporary (None if the file is known to be damaged) and the bytes read from records.
    fn decode(
        &self,
        fi: usize,
        run: &FileRun,
        off: u64,
        len: u64,
        buf: &mut AlignedBuf,
        scratch: &mut ReadScratch,
    ) -> Result<(Option<Arc<Temp>>, u64), IngestError> {
        let f = self.files[fi];
        let temp = if run.damaged.load(Ordering::Acquire) {
            None
        } else {
            Some(run.temp(self.ds, f)?)
        };
        let bytes = &mut buf.bytes_mut()[..len as usize];
        let got = self.store.read_into(f.id, off, bytes, scratch)?;
        for d in got.damaged {
            run.lose(d.start, d.end, d.why);
        }
        if got.len as u64 != len {
            // The namespace and the plan disagree (the plan is a snapshot of it).
            run.lose(
                off + got.len as u64,
                off + len,
                format!("the store returned {} bytes instead of {len}", got.len),
            );
        }
        // An empty file still has one (empty) chunk to hash.
        let mut chunk_start = off;
        loop {
            let clen = CHUNK.min(off + len - chunk_start);
            // A chunk that is one whole record needs no second hash: the store checked the
            // record's plaintext against this very chaining value when reading it.
            let v = f.chunk_digest(chunk_start).unwrap_or_else(|| {
                let s = (chunk_start - off) as usize;
                tree_hash::chunk_value(f.size, chunk_start, &bytes[s..s + clen as usize])
            });
            run.values.lock().unwrap_or_else(|p| p.into_inner())[(chunk_start / CHUNK) as usize] =
                v;
            chunk_start += clen;
            if chunk_start >= off + len {
                break;
            }
        }
        let backed = f.pieces(off, len).iter().filter(|p| p.2).map(|p| p.1).sum();
        Ok((temp, backed))
    }

    /// Writes a decoded span's data ranges (not its holes) into the file's temporary.
    fn write(&self, run: &FileRun, job: &WriteJob) -> Result<(), IngestError> {
        let Some(t) = &job.temp else { return Ok(()) };
        if run.damaged.load(Ordering::Acquire) {
            return Ok(());
        }
        let f = self.files[job.fi];
        let span = &job.buf_bytes()[..job.len as usize];
        // Adjacent data pieces form one range, so that their shared pages go one way.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (at, n, backed) in f.pieces(job.off, job.len) {
            if !backed {
                continue;
            }
            match ranges.last_mut() {
                Some(r) if r.1 == at => r.1 = at + n,
                _ => ranges.push((at, at + n)),
            }
        }
        for (a, b) in ranges {
            t.write_range(span, job.off, a, b)
                .map_err(|err| IngestError::Datastore {
                    op: "write",
                    path: format!("the temporary of {}", f.rel_display()),
                    source: err,
                })?;
        }
        // Start the write-back of this span now (DONTNEED on dirty pages starts it without
        // waiting), so the disk writes while the next spans decode and the file's fsync
        // has little left to do.
        if let Some(n) = std::num::NonZeroU64::new(job.len) {
            let _ = rustix::fs::fadvise(&t.file, job.off, Some(n), rustix::fs::Advice::DontNeed);
        }
        Ok(())
    }

    /// Commits or quarantines a file whose spans are all done.
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
        let root = tree_hash::root(&run.values.lock().unwrap_or_else(|p| p.into_inner()));
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
        let t = temp.expect("every file's first span creates its temporary");
        self.ds
            .seal_temp(&t.name, &t.file, f.size, f.mode, f.atime, f.mtime)?;
        let entry = DoneEntry {
            id: f.id,
            fingerprint: hex::encode(f.fingerprint),
            path: f.rel_display(),
            size: f.size,
            blake3: hex::encode(root),
        };
        // A large file is synced at once (its fsync has much to wait for, and holding it
        // would hold the batch); small ones wait for the batch. Either is renamed only
        // after its intent is durable.
        let t = if f.size >= SPAN {
            self.state.intend(&[&entry])?;
            self.ds.place_file(&t.name, &t.file, &f.rel)?;
            None
        } else {
            Some(t)
        };
        let batch = {
            let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
            p.files.push((fi, root, entry, t));
            p.dirs.insert(f.rel[..f.rel.len() - 1].to_vec());
            let since = *p.since.get_or_insert_with(Instant::now);
            let due =
                p.files.len() >= SYNC_BATCH || since.elapsed() >= SYNC_DELAY || f.size >= SPAN;
            due.then(|| std::mem::take(&mut *p))
        };
        match batch {
            Some(b) => self.flush(b, outcome),
            None => Ok(()),
        }
    }

    /// Syncs the directories of a batch of renamed files, then records them as done.
    fn flush(&self, batch: Pending, outcome: &Mutex<Outcome>) -> Result<(), IngestError> {
        // One durable append of the batch's intents before its renames.
        let placing: Vec<&DoneEntry> = batch
            .files
            .iter()
            .filter(|(_, _, _, t)| t.is_some())
            .map(|(_, _, e, _)| e)
            .collect();
        self.state.intend(&placing)?;
        for (fi, _, _, t) in &batch.files {
            if let Some(t) = t {
                self.ds.place_file(&t.name, &t.file, &self.files[*fi].rel)?;
            }
        }
        for d in &batch.dirs {
            self.ds.sync_dir(d)?;
        }
        for (fi, root, entry, _) in batch.files {
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
