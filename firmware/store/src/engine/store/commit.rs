//! The group commit: changes are admitted through the seal gate, queued, and made durable
//! by whichever waiter leads the next commit (records, then the journal batch naming them,
//! or both under one sync for small batches); and the seal's closing of the log.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, RwLockReadGuard};

use super::{Access, Commit, Core, Leader, Store, lock};
use crate::engine::log::{Chain, DevLog, Piece};
use crate::error::{Result, StoreError, one_line};
use crate::format::journal::{self, Op};
use crate::format::seal_record::{SealRecord, Sealed, SealedDevice, SignedSeal};
use crate::format::superblock::{JOURNAL_START, Superblock};

/// What to do about a full journal: compaction keeps only the live namespace, so a journal
/// that is still full holds more names and extents than half its region can checkpoint.
const JOURNAL_FULL_HINT: &str = ": the files' names and extent maps no longer fit even \
     compacted; remove files (or fewer, larger ones), or provision the devices again with a \
     larger --journal-size";

/// Room a batch header, its tag and the device tails may take in the journal.
const BATCH_SLACK: u64 = 256;
/// Upper bound of one encoded op (a name is at most 255 bytes; symlink targets are capped).
const OP_MAX: u64 = 1400;
/// Bytes kept free in the journal for the seal's last batches.
const JOURNAL_RESERVE: u64 = 1 << 20;
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
pub(super) fn one_sync(sbs: &[Superblock], before: &[u64], after: &[u64]) -> bool {
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

impl Store {
    /// Admits one change: refuses if read-only or sealed, else holds the seal gate shared
    /// until the change is durable.
    pub(super) fn writable(&self) -> Result<RwLockReadGuard<'_, ()>> {
        let g = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if self.access == Access::ReadOnly || self.is_sealed() {
            return Err(StoreError::ReadOnly.into());
        }
        Ok(g)
    }

    /// Stops all changes: waits for those under way, then marks the store sealed. Fails if it
    /// already is.
    pub fn begin_seal(&self) -> Result<()> {
        let _g = self.gate.write().unwrap_or_else(|e| e.into_inner());
        if self.access == Access::ReadOnly || self.is_sealed() {
            return Err(StoreError::ReadOnly.into());
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
                core.ns_mut().apply(op)?;
            }
            core.ops.extend_from_slice(&bytes);
            core.open_batch
        };
        self.wait_durable(ticket)
    }

    /// Journal offset after the batches written so far (durable and being written).
    pub fn journal_end(&self) -> u64 {
        lock(&self.core).journal_end
    }

    /// Journal offset of the journal's first batch (its checkpoint once compacted, else 0).
    pub fn journal_start(&self) -> u64 {
        lock(&self.core).area.start
    }

    pub(super) fn reserve_journal(&self, core: &Core, n_ops: usize) -> Result<()> {
        self.reserve_journal_bytes(core, n_ops as u64 * OP_MAX)
    }

    fn reserve_journal_bytes(&self, core: &Core, op_bytes: u64) -> Result<()> {
        let need = core.journal_end
            + core.ops.len() as u64
            + op_bytes
            + BATCH_SLACK
            + 16 * self.devs.len() as u64;
        let reserve = if self.is_sealed() { 0 } else { JOURNAL_RESERVE };
        if need + reserve > core.area.limit {
            return Err(StoreError::NoSpace(format!(
                "the metadata journal is full ({} of {} bytes used){JOURNAL_FULL_HINT}",
                core.journal_end - core.area.start,
                core.area.limit - core.area.start
            ))
            .into());
        }
        Ok(())
    }

    /// Blocks until the batch `ticket` is durable, leading the commit if nobody is.
    pub(super) fn wait_durable(&self, ticket: u64) -> Result<()> {
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

    pub(super) fn check_failed(&self, c: &Commit) -> Result<()> {
        match &c.failed {
            None => Ok(()),
            Some(why) => Err(StoreError::Stopped {
                path: self.devs[0].path().to_path_buf(),
                why: why.clone(),
            }
            .into()),
        }
    }

    /// Leads one group commit (nobody leads: `c.leading` is false) and wakes the waiters.
    fn lead_now<'a>(&'a self, c: MutexGuard<'a, Commit>) -> MutexGuard<'a, Commit> {
        self.lead_with(c, true)
    }

    /// Leads a group commit (`full`) or only writes the queued records to the devices, with
    /// neither sync nor journal batch (their ops stay queued for the next commit, which
    /// syncs the devices before its batch names them).
    pub(super) fn lead_with<'a>(
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
                let why = one_line(&e);
                tracing::error!(error = %why, "commit failed");
                c.failed = Some(why);
            }
        }
        self.commit_cv.notify_all();
        c
    }

    /// Starts writing the queued records if no leader is at work, without waiting for
    /// anyone else's: unstable writes call this once enough is queued, so the device writes
    /// overlap the building of the next records. Nothing is synced: an unstable write is
    /// durable only at the next commit (COMMIT, `sync`, the appliance's periodic flush).
    pub(super) fn commit_if_idle(&self) -> Result<()> {
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
        let (batch_no, pieces, batch, at, moved, snapshot) = {
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
            // The namespace is exactly what this batch leaves: the checkpoint's state.
            let snapshot = self.wants_compaction(&core).then(|| self.snapshot(&core));
            (batch_no, pieces, batch, at, moved, snapshot)
        };
        if at + batch.len() as u64 > lock(&self.core).area.limit {
            return Err(StoreError::NoSpace(format!(
                "the metadata journal is full{JOURNAL_FULL_HINT}"
            ))
            .into());
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
        if let Some(snap) = snapshot {
            self.compact(snap)?;
        }
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

    /// Closes the log under the seal: for a store whose journal holds the seal op, closes
    /// every device's open segment and writes the signed seal record (the log's end and
    /// chain head per device, the journal's end and hash, the manifest root from the op) to
    /// both seal slots of every device. Also finishes a seal a crash interrupted.
    pub(crate) fn write_seal_record(&self) -> Result<Sealed> {
        let (time, manifest_root, nbundles) = match &lock(&self.core).ns.seal {
            Some(Op::Seal {
                time,
                manifest_root,
                bundles,
                ..
            }) => (*time, *manifest_root, bundles.len() as u32),
            _ => return Err(StoreError::Invalid("the store has no seal op".into()).into()),
        };
        let heads = self.close_segments()?;
        let (journal_start, journal_end) = {
            let core = lock(&self.core);
            (core.area.start, core.journal_end)
        };
        let journal_hash = journal::hash(&self.devs[0], journal_start, journal_end)?;
        let st = self.stats();
        let sb = self.superblock();
        let record = SealRecord {
            version: 2,
            job_id: sb.job_id.clone(),
            set_id: sb.set_id,
            devices: heads
                .iter()
                .enumerate()
                .map(|(i, (tail, head))| SealedDevice {
                    index: i as u32 + 1,
                    tail: *tail,
                    chain_head: *head,
                    next_segment: self.sealed_next_segment(i),
                })
                .collect(),
            journal_end,
            journal_hash,
            manifest_root,
            files: st.files,
            dirs: st.dirs,
            bytes: st.logical_bytes,
            bundles: nbundles,
            sealed: time,
            custody: lock(&self.core).ns.custody.clone(),
        };
        let seal = SignedSeal::sign(record, &self.secrets.signing_key());
        let img = seal.encode();
        for (dev, sbd) in self.devs.iter().zip(&self.sbs) {
            for at in sbd.seal_slots() {
                dev.write_at(&img, at)?;
            }
            dev.sync()?;
        }
        let code = seal.code();
        tracing::info!(code = %code, "sealed");
        Ok(Sealed { seal, code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{segment, superblock};

    fn geometry(segment_size: u64) -> Superblock {
        superblock::test_geometry(segment_size, 16 << 20)
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
