//! The append log: where records go on the devices, what is waiting to be written, and the
//! segment chain the leader of each group commit extends.
//!
//! Writers reserve space and queue their record bytes under the store lock ([`DevLog`]);
//! one leader at a time takes everything queued, writes it with large sequential pwrites
//! (`O_DIRECT` from the aligned staging buffers where the device allows), closes full
//! segments ([`Chain`]), writes the journal batch and syncs.

use std::sync::Arc;

use crate::device::Device;
use crate::device::aligned::{ALIGN, AlignedBuf};
use crate::engine::namespace::DevSegments;
use crate::error::{FormatError, Result, one_line};
use crate::format::segment::{self, SegmentFooter, SegmentHeader};
use crate::format::superblock::Superblock;

/// Room a fresh staging buffer is allocated with: the most one group commit carries (the
/// store's queue bound of 32 MiB plus a write), so buffers are allocated once and then
/// reused. Untouched room costs address space only.
const STAGING: usize = 34 << 20;
/// Emptied staging buffers kept per device for the next batches: with the queue and the
/// batch being written, at most three are resident.
const SPARE: usize = 1;

/// A run of contiguous bytes queued for one device, staged for `O_DIRECT`: the buffer starts
/// at the block boundary at or before `addr`, and its first `head` bytes repeat what the
/// device already holds there (the end of the previous batch, which rewriting with the same
/// bytes cannot damage even if torn).
#[derive(Debug)]
pub struct Piece {
    /// Device byte address of the piece's first queued byte.
    pub addr: u64,
    head: usize,
    buf: AlignedBuf,
}

impl Piece {
    /// The queued bytes, starting at `addr`.
    pub fn bytes(&self) -> &[u8] {
        &self.buf.as_slice()[self.head..]
    }

    fn end(&self) -> u64 {
        self.addr + (self.buf.len() - self.head) as u64
    }

    /// Device offset and bytes of the whole blocks covering the piece, zero-padded at the
    /// end (the device past the log's tail holds nothing anyone refers to).
    pub fn blocks(&self) -> (u64, &[u8]) {
        (self.addr - self.head as u64, self.buf.blocks())
    }
}

/// Allocation state and queued bytes of one device.
#[derive(Debug, Default)]
pub struct DevLog {
    /// Next free byte (0 = nothing written yet).
    pub tail: u64,
    /// Queued pieces not yet handed to a leader.
    pub pending: Vec<Piece>,
    /// Pieces a leader is writing right now (readable until it is done).
    pub inflight: Arc<Vec<Piece>>,
    /// Bytes in `pending`.
    pub pending_bytes: u64,
    /// What the device holds (or will, once queued pieces are written) from the block
    /// boundary before `tail` up to `tail`.
    tail_block: Vec<u8>,
    /// Staging buffers of written batches, for reuse.
    spare: Vec<AlignedBuf>,
    /// Segments freed in this run that views or reads taken before their free may still
    /// read, with the pin epoch they were freed in (see [`crate::engine::pins`]).
    pub released: std::collections::BTreeMap<u64, u64>,
}

impl DevLog {
    /// Hands the queued pieces to a leader: they move to `inflight` (still readable there
    /// until written) and the queue starts empty.
    pub fn take_pending(&mut self) -> Arc<Vec<Piece>> {
        let p = Arc::new(std::mem::take(&mut self.pending));
        self.pending_bytes = 0;
        self.inflight = p.clone();
        p
    }

    /// State at `tail` of a log reopened from the journal; `dev` supplies the bytes of the
    /// partial block before the tail.
    pub fn resume(dev: &Device, tail: u64) -> Result<DevLog> {
        let start = tail - tail % ALIGN as u64;
        Ok(DevLog {
            tail,
            tail_block: dev.read_vec(start, (tail - start) as usize)?,
            ..DevLog::default()
        })
    }

    /// Segment the tail is in, if any.
    pub fn segment(&self, sb: &Superblock) -> Option<u64> {
        sb.segment_of(self.tail)
    }

    /// Bytes still free for records in the open segment.
    pub fn room(&self, sb: &Superblock) -> u64 {
        match self.segment(sb) {
            None => 0,
            Some(s) => sb.footer_start(s) - self.tail,
        }
    }

    fn push(&mut self, addr: u64, bytes: &[u8]) {
        match self.pending.last_mut() {
            Some(p) if p.end() == addr => p.buf.extend_from_slice(bytes),
            _ => {
                let head = (addr % ALIGN as u64) as usize;
                let mut buf = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| AlignedBuf::with_capacity(STAGING));
                buf.clear();
                if head > 0 {
                    // Only the log's own tail starts mid-block (segments start on a boundary).
                    assert!(
                        addr == self.tail && self.tail_block.len() == head,
                        "a queued piece starts mid-block away from the tail"
                    );
                    buf.extend_from_slice(&self.tail_block);
                }
                buf.extend_from_slice(bytes);
                self.pending.push(Piece { addr, head, buf });
            }
        }
        self.pending_bytes += bytes.len() as u64;
        let raw = self.pending.last().expect("just pushed").buf.as_slice();
        self.tail_block.clear();
        self.tail_block
            .extend_from_slice(&raw[raw.len() - raw.len() % ALIGN..]);
    }

    /// Takes back the staging buffers of a batch the leader has written.
    pub fn recycle(&mut self, written: Arc<Vec<Piece>>) {
        if let Ok(pieces) = Arc::try_unwrap(written) {
            for p in pieces {
                if self.spare.len() < SPARE {
                    self.spare.push(p.buf);
                }
            }
        }
    }

    /// Starts segment `seg` (never used, or freed and no longer read), the `seq`-th opened
    /// on this device: queues its header; records go after it.
    pub fn open_segment(&mut self, sb: &Superblock, seg: u64, seq: u64) {
        let start = sb.segment_start(seg);
        let hdr = SegmentHeader {
            set_id: sb.set_id,
            device_index: sb.device_index,
            segment: seg,
            seq,
        };
        self.push(start, &hdr.encode());
        self.tail = start + segment::BLOCK;
    }

    /// Queues `record` in the open segment and returns its address, or `None` if it does
    /// not fit there (the caller opens another segment).
    pub fn append(&mut self, sb: &Superblock, record: &[u8]) -> Option<u64> {
        let n = record.len() as u64;
        assert!(n <= sb.segment_size - 2 * segment::BLOCK);
        if n > self.room(sb) {
            return None;
        }
        let addr = self.tail;
        self.push(addr, record);
        self.tail += n;
        Some(addr)
    }

    /// Copies `len` bytes at `addr` if they are still queued or being written.
    pub fn queued(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.inflight
            .iter()
            .chain(self.pending.iter())
            .find(|p| p.addr <= addr && addr + len as u64 <= p.end())
            .map(|p| {
                let at = (addr - p.addr) as usize;
                p.bytes()[at..at + len].to_vec()
            })
    }
}

/// The leader's view of one device's segment chain: the open segment's running hash and
/// the hash of the last footer.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The open segment (None before the first record).
    pub segment: Option<u64>,
    /// Its place in the device's write order.
    seq: u64,
    hasher: blake3::Hasher,
    hashed_to: u64,
    /// Hash of the last segment footer written (zeros before the first).
    pub prev_footer: [u8; 32],
}

impl Chain {
    /// A device with no segment written.
    pub fn empty() -> Chain {
        Chain {
            segment: None,
            seq: 0,
            hasher: blake3::Hasher::new(),
            hashed_to: 0,
            prev_footer: [0; 32],
        }
    }

    /// Rebuilds the chain state at open: re-hashes the open segment up to `tail` and takes
    /// the hash of the footer written before it (checking that footer). `segs` says which
    /// segment that is: the one opened just before, if still in use. The cleaner may have
    /// freed it (zeroing its header and footer); the open segment's link to it is then never
    /// checked (the keyless walk checks links only to segments still in the chain), so the
    /// link is left zero.
    pub fn resume(dev: &Device, sb: &Superblock, tail: u64, segs: &DevSegments) -> Result<Chain> {
        let mut c = Chain::empty();
        if tail == 0 {
            return Ok(c);
        }
        let seg = sb.segment_of(tail).expect("tail is not 0");
        let start = sb.segment_start(seg);
        let mut at = start;
        let mut buf = vec![0u8; 8 << 20];
        while at < tail {
            let n = buf.len().min((tail - at) as usize);
            dev.read_at(&mut buf[..n], at)?;
            c.hasher.update(&buf[..n]);
            at += n as u64;
        }
        c.hashed_to = tail;
        c.segment = Some(seg);
        c.seq = segs.seq_of(seg).unwrap_or_else(|| {
            tracing::error!(segment = seg, "the open segment is not journaled as opened");
            0
        });
        if c.seq > 0 {
            match segs.with_seq(c.seq - 1) {
                None => {
                    // Freed by the cleaner: nothing links to it any more.
                    tracing::debug!(
                        segment = seg,
                        "the segment written before the open one was cleaned"
                    );
                }
                Some(prev) => match read_footer(dev, sb, prev) {
                    Ok(f) => c.prev_footer = f.hash(),
                    Err(_) if footer_is_zero(dev, sb, prev)? => {
                        // A clean interrupted between zeroing it and journaling its free:
                        // it leaves the chain (its header is zero too) and is cleaned again.
                        tracing::debug!(
                            segment = prev,
                            "the segment written before the open one was being cleaned"
                        );
                    }
                    Err(e) => {
                        // Keep serving and appending; the keyless check will name this footer.
                        tracing::error!(error = %one_line(&e), "previous segment footer is damaged");
                        let at = sb.footer_start(prev);
                        let raw = dev.read_vec(at, segment::BLOCK as usize)?;
                        c.prev_footer = *blake3::hash(&raw).as_bytes();
                    }
                },
            }
        }
        Ok(c)
    }

    /// Hashes a piece about to be written; closes the open segment first when the piece
    /// starts a new one.
    pub fn feed(&mut self, dev: &Device, sb: &Superblock, piece: &Piece) -> Result<()> {
        let seg = (piece.addr - sb.data_start()) / sb.segment_size;
        if self.segment != Some(seg) {
            if self.segment.is_some() {
                self.close(dev, sb)?;
            }
            self.segment = Some(seg);
            // A piece opening a segment starts with the header the allocator queued.
            self.seq = SegmentHeader::decode(piece.bytes())
                .map(|h| h.seq)
                .unwrap_or_default();
            self.hasher = blake3::Hasher::new();
            self.hashed_to = sb.segment_start(seg);
        }
        debug_assert_eq!(piece.addr, self.hashed_to, "log pieces must be contiguous");
        self.hasher.update(piece.bytes());
        self.hashed_to = piece.end();
        Ok(())
    }

    /// Writes the open segment's footer (no sync). Returns the footer.
    pub fn close(&mut self, dev: &Device, sb: &Superblock) -> Result<Option<SegmentFooter>> {
        let Some(seg) = self.segment.take() else {
            return Ok(None);
        };
        let start = sb.segment_start(seg);
        let f = SegmentFooter {
            device_index: sb.device_index,
            segment: seg,
            seq: self.seq,
            used: self.hashed_to - start,
            content_hash: *self.hasher.finalize().as_bytes(),
            prev_footer: self.prev_footer,
        };
        dev.write_at(&f.encode(), sb.footer_start(seg))?;
        self.prev_footer = f.hash();
        Ok(Some(f))
    }
}

/// Whether the footer block of segment `seg` is all zeros (taken out of the chain by the
/// cleaner).
fn footer_is_zero(dev: &Device, sb: &Superblock, seg: u64) -> Result<bool> {
    let block = dev.read_vec(sb.footer_start(seg), segment::BLOCK as usize)?;
    Ok(crate::format::is_zero(&block))
}

/// Reads and decodes the footer of segment `seg`.
pub fn read_footer(dev: &Device, sb: &Superblock, seg: u64) -> Result<SegmentFooter> {
    let at = sb.footer_start(seg);
    let b = dev.read_vec(at, segment::BLOCK as usize)?;
    SegmentFooter::decode(&b)
        .map_err(|why| FormatError::corrupt("segment footer", dev.path(), at, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `bytes` at the tail as `append` does (without segments).
    fn queue(log: &mut DevLog, bytes: &[u8]) {
        let at = log.tail;
        log.push(at, bytes);
        log.tail += bytes.len() as u64;
    }

    #[test]
    fn batches_ending_mid_block_rewrite_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let dev = Device::open(&path, true).unwrap();
        let mut log = DevLog::default();
        let mut want = Vec::new();
        let mut n = 0u8;
        // Three batches of records of awkward sizes; each batch written as a leader does.
        for sizes in [&[4096usize, 100][..], &[5000, 1], &[8191, 4097, 3]] {
            for &len in sizes {
                n += 1;
                let rec = vec![n; len];
                queue(&mut log, &rec);
                want.extend_from_slice(&rec);
            }
            let batch = Arc::new(std::mem::take(&mut log.pending));
            for p in batch.iter() {
                let (at, blocks) = p.blocks();
                assert_eq!(at % ALIGN as u64, 0);
                dev.write_blocks(blocks, at).unwrap();
            }
            log.recycle(batch);
            assert_eq!(log.spare.len(), 1, "the staging buffer is reused");
        }
        assert_eq!(dev.read_vec(0, want.len()).unwrap(), want);
        // Reopened at that tail, the partial block is read back from the device.
        let resumed = DevLog::resume(&dev, log.tail).unwrap();
        assert_eq!(resumed.tail_block, log.tail_block);
        assert_eq!(resumed.tail_block.len(), want.len() % ALIGN);
    }
}
