//! Recovery at open: the journal is replayed up to its first incomplete batch (a crash's
//! torn tail), damage is told from a tear, the last batch's records are checked when it
//! was made durable with them by one sync, and whatever an interrupted leader left past
//! the durable tails is cleared. A compacted journal starts with its checkpoint (see
//! [`super::compact`]); replay goes on from there.

use std::path::Path;
use std::sync::Arc;

use super::commit::one_sync;
use super::{Access, Store, lock};
use crate::crypto::cipher::Purpose;
use crate::engine::log::{Chain, DevLog};
use crate::engine::namespace::{Extent, Namespace, RecRef, Segments};
use crate::error::{FormatError, Result};
use crate::format::checkpoint;
use crate::format::is_zero;
use crate::format::journal::{self, BatchHeader, Op};
use crate::format::record;
use crate::format::segment;
use crate::format::superblock::JOURNAL_START;

/// How far past the journal's end to look for batches that would betray damage.
const MAX_BATCH_SCAN: u64 = 64 << 20;

impl Store {
    /// Replays the journal up to its first incomplete batch (a crash's torn tail) and rebuilds
    /// the segment chains. Records are durable before the next batch is written; those of
    /// the last batch, if it was made durable with them by one sync, are checked here, and
    /// the batch is dropped as torn if some did not reach the device (see [`one_sync`]).
    pub(super) fn recover(&mut self) -> Result<()> {
        let dev0 = &self.devs[0];
        let jlen = self.sbs[0].journal_len;
        let mut core = lock(&self.core);
        let mut tails: Vec<u64> = vec![0; self.devs.len()];
        let mut pos = 0u64;
        let mut seq = 1u64;
        // A compacted journal starts with the checkpoint the start pointer names.
        let start = checkpoint::read_start(dev0, &self.sbs[0])?;
        if let Some(s) = &start {
            let (ns, t, end) = self.load_checkpoint(s)?;
            core.ns = Arc::new(ns);
            tails = t;
            pos = end;
            seq = s.next_seq;
            core.area.checkpoint = end - s.start;
            core.area.generation = s.generation;
        }
        core.area.start = start.map_or(0, |s| s.start);
        core.area.limit = checkpoint::limit(&self.sbs[0], core.area.start, start.is_some());
        let jlen = jlen.min(core.area.limit);
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
                FormatError::corrupt(
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
                return Err(FormatError::corrupt(
                    "journal batch",
                    dev0.path(),
                    JOURNAL_START + pos,
                    "names a different number of devices",
                ));
            }
            if let Some((hpos, ht, hops)) = held.take() {
                Self::replay(core.ns_mut(), &hops, dev0.path(), hpos)?;
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
                Self::replay(core.ns_mut(), &hops, dev0.path(), hpos)?;
                tails = ht;
            } else {
                // Never acknowledged: its sync did not return. Cleared below like a torn tail.
                end = hpos;
                seq -= 1;
                dropped = true;
            }
        }
        if end < jlen && !dropped {
            self.check_journal_tail(end, seq, jlen)?;
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
        let segments = core.ns.segments().clone();
        drop(core);
        lock(&self.commit).durable = seq - 1;
        if self.access == Access::ReadWrite {
            let mut chains = Vec::new();
            for (i, dev) in self.devs.iter().enumerate() {
                let segs = segments.dev(i as u32);
                chains.push(Chain::resume(dev, &self.sbs[i], tails[i], segs)?);
            }
            lock(&self.leader).chains = chains;
            if !sealed {
                self.clear_after_tails(&tails, end, jlen, &segments)?;
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
            if let Op::Move { to, .. } = op {
                // A copy made by the cleaner: torn if it did not reach the device; its
                // authentication is checked by reads as for any record.
                let Some(dev) = self.devs.get(to.dev as usize) else {
                    return Err(FormatError::corrupt(
                        "journal batch",
                        self.devs[0].path(),
                        JOURNAL_START + pos,
                        format!(
                            "moves a record to device {} of {}",
                            to.dev + 1,
                            self.devs.len()
                        ),
                    ));
                };
                if torn_record(to.addr, &dev.read_vec(to.addr, to.len as usize)?) {
                    tracing::warn!(
                        "the last commit before the device was closed did not complete (a \
                         record the cleaner copied is missing from {} at byte {}): it is dropped",
                        dev.path().display(),
                        to.addr
                    );
                    return Ok(false);
                }
                continue;
            }
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
                return Err(FormatError::corrupt(
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
                rec: RecRef {
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
                FormatError::corrupt(
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
    fn check_journal_tail(&self, end: u64, next_seq: u64, jlen: u64) -> Result<()> {
        let window = (jlen - end).min(MAX_BATCH_SCAN) as usize;
        let buf = self.devs[0].read_vec(JOURNAL_START + end, window)?;
        if is_zero(&buf) {
            return Ok(());
        }
        let damaged = |why: String| {
            Err(FormatError::corrupt(
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
    /// log ends exactly where the journal says (the seal check relies on it): in the open
    /// segment, in the segment the allocator opens next, and in freed segments (one a lost
    /// batch reopened, or one whose free was journaled just before a crash, before its
    /// header was zeroed). Freed segments are given back to the device again.
    fn clear_after_tails(
        &self,
        tails: &[u64],
        journal_end: u64,
        jlen: u64,
        segments: &Segments,
    ) -> Result<()> {
        let block = segment::BLOCK as usize;
        for (i, dev) in self.devs.iter().enumerate() {
            let sb = &self.sbs[i];
            let segs = segments.dev(i as u32);
            if tails[i] != 0 {
                let s = sb.segment_of(tails[i]).expect("tail is not 0");
                let from = tails[i];
                let seg_end = sb.footer_start(s);
                let probe = dev.read_vec(from, (seg_end - from).min(64 * 1024) as usize)?;
                if !is_zero(&probe) {
                    dev.zero(from, seg_end - from)?;
                }
                // The open segment has no footer yet: one there was written by a commit
                // that closed this segment and then died before its journal batch.
                if !is_zero(&dev.read_vec(seg_end, block)?) {
                    dev.zero(seg_end, segment::BLOCK)?;
                }
            }
            let dirty = |seg: u64| -> Result<bool> {
                Ok(!is_zero(&dev.read_vec(sb.segment_start(seg), block)?)
                    || !is_zero(&dev.read_vec(sb.footer_start(seg), block)?))
            };
            // Never-opened segments a lost batch wrote into, from the first one on.
            let mut seg = segs.fresh_from();
            while seg < sb.segment_count() && dirty(seg)? {
                dev.zero(sb.segment_start(seg), sb.segment_size)?;
                seg += 1;
            }
            for &seg in segs.free() {
                let start = sb.segment_start(seg);
                if !dev.discard(start, sb.segment_size)? && dirty(seg)? {
                    dev.zero(start, segment::BLOCK)?;
                    dev.zero(sb.footer_start(seg), segment::BLOCK)?;
                }
            }
        }
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
}

/// Whether every 512-byte device sector a journal batch at device offset `at` touches holds
/// some of its bytes. The journal past its end is always zeros (provisioning and recovery
/// zero it) and devices write whole sectors, so a batch torn by a crash or power cut leaves
/// at least one sector's share of it all zeros; an encrypted batch never has one otherwise
/// (only a share of a few bytes could be zero by chance, and then damage is taken for a
/// tear: the safe side, as a crash must never make the store refuse to open).
fn fully_written(at: u64, batch: &[u8]) -> bool {
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
}
