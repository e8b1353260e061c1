//! Journal compaction: past a threshold, the leader of a group commit writes the state as
//! of its batch as a checkpoint into the journal's other area, moves the journal start
//! pointer there, and drops the old journal (layout and crash argument:
//! [`crate::format::checkpoint`]); and reading a checkpoint back at open.
//!
//! Memory: the checkpoint is streamed in batches of about [`CHECKPOINT_BATCH`] bytes from
//! a snapshot of the namespace (a reference count; a change made while the checkpoint is
//! written copies the namespace once, so compaction may briefly hold two copies of it).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Access, Core, Store, lock};
use crate::crypto::cipher::Purpose;
use crate::engine::namespace::{Namespace, Rebuild};
use crate::error::{FormatError, Result};
use crate::format::checkpoint::{self, Item, Start};
use crate::format::is_zero;
use crate::format::journal::{self, BATCH_HEADER, BatchHeader, BatchKind, Tails};
use crate::format::superblock::JOURNAL_START;

/// Plaintext bytes after which a checkpoint batch is closed.
pub(super) const CHECKPOINT_BATCH: usize = 1 << 20;
/// Room a new journal must keep after its checkpoint (the queued ops and the seal's last
/// batches) for the compaction to go ahead.
const ROOM_AFTER: u64 = 2 << 20;

/// What a compaction writes: the state as of one batch.
pub(super) struct Snapshot {
    ns: Arc<Namespace>,
    tails: Tails,
    next_seq: u64,
    start: u64,
    end: u64,
    generation: u64,
}

/// Where the journal starts and how far it may grow, as the store keeps it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JournalArea {
    /// Journal offset of its first batch (a checkpoint, or 0).
    pub start: u64,
    /// Where it must end.
    pub limit: u64,
    /// The start pointer's generation (0: never compacted).
    pub generation: u64,
    /// Bytes of the checkpoint at `start`.
    pub checkpoint: u64,
    /// Journal bytes used from which a compaction is tried (raised after one that did not
    /// fit, so that it is not retried at every commit).
    pub retry_at: u64,
}

impl Store {
    /// Whether the journal, once the batch being built is appended, should be compacted.
    pub(super) fn wants_compaction(&self, core: &Core) -> bool {
        if self.access != Access::ReadWrite || self.is_sealed() {
            return false;
        }
        let a = &core.area;
        // The area it is in (a journal never compacted counts as in area A, so that its
        // first checkpoint goes to area B).
        let room = checkpoint::limit(&self.sbs[0], a.start, true) - a.start;
        let used = core.journal_end - a.start;
        // Once the ops after the checkpoint fill half the room it leaves (half the area for
        // a journal never compacted): early enough that a large checkpoint still leaves
        // the journal's reserve untouched.
        used >= a.retry_at && used - a.checkpoint >= (room - a.checkpoint) / 2
    }

    /// The state as of the batch just built (called under the store lock, with the batch's
    /// ops applied and nothing after them).
    pub(super) fn snapshot(&self, core: &Core) -> Snapshot {
        Snapshot {
            ns: core.ns.clone(),
            tails: core.batch_tails.clone(),
            next_seq: core.open_batch,
            start: core.area.start,
            end: core.journal_end,
            generation: core.area.generation,
        }
    }

    /// Compacts the journal now, waiting for any commit under way (for tests and tools; the
    /// store compacts by itself past its threshold). Returns whether it compacted.
    pub fn compact_journal(&self) -> Result<bool> {
        self.sync()?;
        let mut c = lock(&self.commit);
        while c.leading {
            c = self.commit_cv.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        self.check_failed(&c)?;
        c.leading = true;
        drop(c);
        let r = (|| {
            let snap = {
                let core = lock(&self.core);
                if self.access != Access::ReadWrite || self.is_sealed() {
                    return Ok(false);
                }
                // Queued ops would be in the namespace but in no batch yet.
                if !core.ops.is_empty() {
                    return Ok(false);
                }
                self.snapshot(&core)
            };
            self.compact(snap)
        })();
        let mut c = lock(&self.commit);
        c.leading = false;
        if let Err(e) = &r {
            c.failed = Some(crate::error::one_line(e));
        }
        self.commit_cv.notify_all();
        r
    }

    /// Writes the checkpoint of `snap` into the other area, moves the start pointer there
    /// and zeros the old journal. The caller leads the commit (no batch is written
    /// meanwhile) and `snap`'s batch is durable. Returns false if the checkpoint did not
    /// fit (the journal stays as it was).
    pub(super) fn compact(&self, snap: Snapshot) -> Result<bool> {
        let dev0 = &self.devs[0];
        let sb = &self.sbs[0];
        let at = checkpoint::target(sb, snap.start, snap.end);
        let limit = checkpoint::limit(sb, at, true);
        // Leftovers of a compaction interrupted before its pointer was written.
        let mut off = at;
        while off < limit {
            let n = (limit - off).min(8 << 20);
            if !is_zero(&dev0.read_vec(JOURNAL_START + off, n as usize)?) {
                dev0.zero(JOURNAL_START + off, n)?;
            }
            off += n;
        }
        let head = snap.ns.checkpoint_head(snap.next_seq, snap.tails.clone());
        let mut w = Writer {
            store: self,
            pos: at,
            stop: limit.saturating_sub(ROOM_AFTER),
            tails: &snap.tails,
            plain: Vec::with_capacity(CHECKPOINT_BATCH + 4096),
            seq: 0,
            items: 0,
        };
        let fits = (|| {
            w.push(Item::Head(head))?;
            snap.ns.for_each_item(|i| w.push(i))?;
            let items = w.items;
            w.push(Item::End { items })?;
            w.flush()
        })();
        match fits {
            Ok(()) => {}
            Err(Spill::Io(e)) => return Err(e),
            Err(Spill::Full) => {
                dev0.zero(JOURNAL_START + at, w.pos - at)?;
                dev0.sync()?;
                let mut core = lock(&self.core);
                let used = core.journal_end - core.area.start;
                core.area.retry_at = used + (core.area.limit - core.area.start) / 8;
                tracing::warn!(
                    "the metadata journal cannot be compacted: the namespace's checkpoint \
                     does not fit half of the {} byte journal region; it keeps growing until \
                     full (provision with a larger --journal-size for this many entries)",
                    sb.journal_len
                );
                return Ok(false);
            }
        }
        let end = w.pos;
        dev0.sync()?;
        let start = Start {
            generation: snap.generation + 1,
            start: at,
            next_seq: snap.next_seq,
        };
        checkpoint::write_start(dev0, sb, &start)?;
        dev0.sync()?;
        {
            let mut core = lock(&self.core);
            debug_assert_eq!(core.journal_end, snap.end, "a batch was written meanwhile");
            core.journal_end = end;
            core.area = JournalArea {
                start: at,
                limit,
                generation: start.generation,
                checkpoint: end - at,
                retry_at: 0,
            };
        }
        // The old journal is no longer read; zeroed from its end back, so that a crash
        // part way leaves no journal-like bytes behind a zero block.
        let mut top = snap.end;
        while top > snap.start {
            let n = (top - snap.start).min(8 << 20);
            dev0.zero(JOURNAL_START + top - n, n)?;
            top -= n;
        }
        dev0.sync()?;
        tracing::info!(
            checkpoint_bytes = end - at,
            dropped_bytes = snap.end - snap.start,
            "metadata journal compacted"
        );
        Ok(true)
    }

    /// Reads the checkpoint the start pointer names: the namespace and device tails it
    /// holds and the journal offset after it.
    pub(super) fn load_checkpoint(&self, s: &Start) -> Result<(Namespace, Tails, u64)> {
        let dev0 = &self.devs[0];
        let limit = checkpoint::limit(&self.sbs[0], s.start, true);
        let mut pos = s.start;
        let mut seq = 0u64;
        let mut rebuild: Option<Rebuild> = None;
        let mut tails: Option<Tails> = None;
        let mut items = 0u64;
        let damaged = |at: u64, why: String| {
            FormatError::corrupt(
                "journal checkpoint",
                dev0.path(),
                JOURNAL_START + at,
                format!("{why}; the namespace cannot be rebuilt (run `odt verify`)"),
            )
        };
        loop {
            if pos + BATCH_HEADER as u64 > limit {
                return Err(damaged(pos, "runs past its area".into()));
            }
            let head = dev0.read_vec(JOURNAL_START + pos, BATCH_HEADER)?;
            let h = BatchHeader::decode(&head)
                .filter(|h| h.kind == BatchKind::Checkpoint && h.cipher == self.cipher)
                .ok_or_else(|| damaged(pos, format!("batch {seq} is missing or damaged")))?;
            if h.seq != seq {
                return Err(damaged(pos, format!("batch {} where {seq} belongs", h.seq)));
            }
            if pos + h.total_len() as u64 > limit {
                return Err(damaged(pos, "runs past its area".into()));
            }
            let batch = dev0.read_vec(JOURNAL_START + pos, h.total_len())?;
            if !h.crc_ok(&batch) {
                return Err(damaged(pos, format!("batch {seq} fails its checksum")));
            }
            let key = self.key_for_session(h.session, Purpose::Journal);
            let (t, list): (Tails, Vec<Item>) =
                journal::open_batch_of(BatchKind::Checkpoint, &key, &h, &batch).map_err(|e| {
                    damaged(
                        pos,
                        match e {
                            journal::BatchError::Auth => {
                                format!("batch {seq} fails authentication (tampered metadata)")
                            }
                            journal::BatchError::Decode(w) => {
                                format!("batch {seq} does not decode: {w}")
                            }
                        },
                    )
                })?;
            if t.len() != self.devs.len() || tails.as_ref().is_some_and(|x| *x != t) {
                return Err(damaged(pos, "names other devices".into()));
            }
            tails = Some(t);
            pos += h.total_len() as u64;
            seq += 1;
            for item in list {
                match (item, &mut rebuild) {
                    (Item::Head(head), None) => {
                        if head.next_seq != s.next_seq || Some(&head.tails) != tails.as_ref() {
                            return Err(damaged(
                                s.start,
                                "its head does not match the start pointer".into(),
                            ));
                        }
                        rebuild =
                            Some(Rebuild::new(&head).map_err(|e| damaged(s.start, e.to_string()))?);
                    }
                    (Item::End { items: n }, Some(_)) => {
                        if n != items {
                            return Err(damaged(pos, "items are missing".into()));
                        }
                        let ns = rebuild
                            .take()
                            .expect("matched Some")
                            .finish()
                            .map_err(|e| damaged(s.start, e.to_string()))?;
                        return Ok((ns, tails.expect("a batch was read"), pos));
                    }
                    (item, Some(r)) => r.add(item).map_err(|e| damaged(pos, e.to_string()))?,
                    (_, None) => {
                        return Err(damaged(s.start, "it does not begin with its head".into()));
                    }
                }
                items += 1;
            }
        }
    }
}

enum Spill {
    Full,
    Io(crate::error::Error),
}

impl From<crate::error::Error> for Spill {
    fn from(e: crate::error::Error) -> Spill {
        Spill::Io(e)
    }
}

/// Streams checkpoint items into batches written one after another from `at`.
struct Writer<'a> {
    store: &'a Store,
    pos: u64,
    stop: u64,
    tails: &'a Tails,
    plain: Vec<u8>,
    seq: u64,
    items: u64,
}

impl Writer<'_> {
    fn push(&mut self, item: Item) -> std::result::Result<(), Spill> {
        checkpoint::encode_item(&item, &mut self.plain);
        self.items += 1;
        if self.plain.len() >= CHECKPOINT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::result::Result<(), Spill> {
        if self.plain.is_empty() {
            return Ok(());
        }
        let s = self.store;
        let counter = s.counter.fetch_add(1, Ordering::Relaxed);
        let batch = journal::build_batch_of(
            BatchKind::Checkpoint,
            &s.journal_key,
            s.cipher,
            self.seq,
            s.session,
            counter,
            self.tails,
            &self.plain,
        );
        self.plain.clear();
        if self.pos + batch.len() as u64 > self.stop {
            return Err(Spill::Full);
        }
        s.devs[0].write_at(&batch, JOURNAL_START + self.pos)?;
        self.pos += batch.len() as u64;
        self.seq += 1;
        Ok(())
    }
}
