//! File content in: a write is cut into records (holes for all-zero runs), each compressed,
//! encrypted and hashed in the caller's thread, then placed on a device's log and journaled
//! under the store lock; durable writes wait for the commit, unstable ones only for room in
//! the queue.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use super::{Attr, Core, Store, lock};
use crate::error::{Result, StoreError};
use crate::format::is_zero;
use crate::format::journal::{self, Loc, Op, Time};
use crate::format::record::{self, Binding, MAX_PLAIN};
use crate::format::segment;
use crate::format::tree_hash::{self, CHUNK};

/// Granularity of zero detection inside a write: all-zero runs of this size become holes.
const ZERO_GRAIN: usize = 64 * 1024;
/// Queued bytes per device above which writers wait for the leader to catch up. Memory:
/// the queue, the batch being written and a spare staging buffer each hold up to this
/// much (see `log::STAGING`).
const MAX_QUEUED: u64 = 32 << 20;
/// Queued bytes per device at which an unstable write starts a commit (if none runs), so
/// the queue is written while it refills instead of once it is full.
const COMMIT_AT: u64 = 8 << 20;

/// A record built outside the lock, waiting to be queued.
struct Built {
    offset: u64,
    len: u32,
    generation: u64,
    digest: [u8; 32],
    bytes: Option<Vec<u8>>,
}

impl Store {
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
        self.note_write();
        self.check_size(id, offset.saturating_add(data.len() as u64))?;
        if data.is_empty() {
            return self.getattr(id);
        }
        {
            // Cheap early refusal (the authoritative check is under the lock below).
            let core = lock(&self.core);
            core.ns.file(id)?;
        }
        let built = self.build_records(id, offset, data);
        // Chaining values of the whole chunks this write covers, for the manifest: a chunk
        // that is one record already has it; any other (holes, several records) takes a
        // BLAKE3 pass over it, done here rather than under the store lock.
        let mut chunk_cvs = Vec::new();
        let mut chunk_start = offset.next_multiple_of(CHUNK);
        while chunk_start + CHUNK <= offset + data.len() as u64 {
            let s = (chunk_start - offset) as usize;
            let cv = match built.iter().find(|b| b.offset == chunk_start) {
                Some(b)
                    if b.bytes.is_some()
                        && tree_hash::record_is_chunk(b.offset, b.len as u64, chunk_start) =>
                {
                    b.digest
                }
                _ => tree_hash::record_digest(chunk_start, &data[s..s + CHUNK as usize]),
            };
            chunk_cvs.push((chunk_start / CHUNK, cv));
            chunk_start += CHUNK;
        }
        let ticket = {
            let mut core = self.wait_for_queue_room()?;
            self.reserve_journal(&core, built.len() + 2)?;
            let need: u64 = built
                .iter()
                .filter_map(|b| b.bytes.as_ref())
                .map(|b| b.len() as u64 + segment::BLOCK)
                .sum();
            if need > self.writable_bytes(&core) {
                // A device never reports full while dead records could be cleaned.
                drop(core);
                self.make_room(need)?;
                core = self.wait_for_queue_room()?;
                self.reserve_journal(&core, built.len() + 2)?;
                let free = self.writable_bytes(&core);
                if need > free {
                    return Err(StoreError::NoSpace(format!(
                        "the data devices are full ({free} bytes free, this write needs {need})"
                    ))
                    .into());
                }
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
                core.ns_mut().apply(&op)?;
                journal::encode_op(&op, &mut core.ops);
            }
            // Whole chunks written at once keep their chaining value for the manifest.
            for &(chunk, cv) in &chunk_cvs {
                let op = Op::ChunkCv { id, chunk, cv };
                core.ns_mut().apply(&op)?;
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
        if let Some(o) = self.observer() {
            o.wrote(id, offset, data);
        }
        self.getattr(id)
    }

    /// The store lock, once the queue has room (bounded memory): when it is full, leads a
    /// commit if nobody does, else waits for the running one to end.
    pub(super) fn wait_for_queue_room(&self) -> Result<MutexGuard<'_, Core>> {
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
        let first = core.next_dev;
        let loc = self.place_from(core, first, bytes)?;
        core.next_dev = (loc.dev as usize + 1) % self.devs.len();
        Ok(loc)
    }

    /// Cuts a write into records (none crossing a chunk boundary, so that whole chunks stay
    /// whole), turns all-zero runs into holes, and builds each record.
    fn build_records(&self, id: u64, offset: u64, data: &[u8]) -> Vec<Built> {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let abs = offset + at as u64;
            let to_boundary = (CHUNK - abs % CHUNK) as usize;
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
                    (tree_hash::record_digest(poff, piece), Some(rec))
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
}
