//! The append log: where records go on the devices, what is waiting to be written, and the
//! segment chain the leader of each group commit extends.
//!
//! Writers reserve space and queue their record bytes under the store lock ([`DevLog`]);
//! one leader at a time takes everything queued, writes it with large sequential pwrites,
//! closes full segments ([`Chain`]), writes the journal batch and syncs.

use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::segment::{self, SegmentFooter, SegmentHeader};
use crate::superblock::Superblock;

/// A run of contiguous bytes queued for one device.
#[derive(Debug, Clone)]
pub struct Piece {
    pub addr: u64,
    pub bytes: Vec<u8>,
}

impl Piece {
    fn end(&self) -> u64 {
        self.addr + self.bytes.len() as u64
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
}

impl DevLog {
    /// Segment the tail is in, if any.
    pub fn segment(&self, sb: &Superblock) -> Option<u64> {
        (self.tail != 0).then(|| (self.tail - 1 - sb.data_start()) / sb.segment_size)
    }

    /// Bytes still free for records on this device.
    pub fn free(&self, sb: &Superblock) -> u64 {
        let per_seg = sb.segment_size - 2 * segment::BLOCK;
        match self.segment(sb) {
            None => sb.segment_count() * per_seg,
            Some(s) => {
                let seg_end = sb.segment_start(s) + sb.segment_size - segment::BLOCK;
                (seg_end - self.tail) + (sb.segment_count() - s - 1) * per_seg
            }
        }
    }

    fn push(&mut self, addr: u64, bytes: &[u8]) {
        match self.pending.last_mut() {
            Some(p) if p.end() == addr => p.bytes.extend_from_slice(bytes),
            _ => self.pending.push(Piece {
                addr,
                bytes: bytes.to_vec(),
            }),
        }
        self.pending_bytes += bytes.len() as u64;
    }

    fn open_segment(&mut self, sb: &Superblock, seg: u64) -> Result<()> {
        if seg >= sb.segment_count() {
            return Err(Error::NoSpace(format!(
                "device {} of the set is full ({} segments of {} MiB used)",
                sb.device_index + 1,
                sb.segment_count(),
                sb.segment_size >> 20
            )));
        }
        let start = sb.segment_start(seg);
        let hdr = SegmentHeader {
            set_id: sb.set_id,
            device_index: sb.device_index,
            segment: seg,
        };
        self.push(start, &hdr.encode());
        self.tail = start + segment::BLOCK;
        Ok(())
    }

    /// Reserves room for `record` and queues it; returns its address.
    pub fn append(&mut self, sb: &Superblock, record: &[u8]) -> Result<u64> {
        let n = record.len() as u64;
        assert!(n <= sb.segment_size - 2 * segment::BLOCK);
        match self.segment(sb) {
            None => self.open_segment(sb, 0)?,
            Some(s) => {
                let seg_end = sb.segment_start(s) + sb.segment_size - segment::BLOCK;
                if self.tail + n > seg_end {
                    self.open_segment(sb, s + 1)?;
                }
            }
        }
        let addr = self.tail;
        self.push(addr, record);
        self.tail += n;
        Ok(addr)
    }

    /// Copies `len` bytes at `addr` if they are still queued or being written.
    pub fn queued(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.inflight
            .iter()
            .chain(self.pending.iter())
            .find(|p| p.addr <= addr && addr + len as u64 <= p.end())
            .map(|p| {
                let at = (addr - p.addr) as usize;
                p.bytes[at..at + len].to_vec()
            })
    }
}

/// The leader's view of one device's segment chain: the open segment's running hash and
/// the hash of the last footer.
#[derive(Debug, Clone)]
pub struct Chain {
    pub segment: Option<u64>,
    hasher: blake3::Hasher,
    hashed_to: u64,
    pub prev_footer: [u8; 32],
}

impl Chain {
    /// A device with no segment written.
    pub fn empty() -> Chain {
        Chain {
            segment: None,
            hasher: blake3::Hasher::new(),
            hashed_to: 0,
            prev_footer: [0; 32],
        }
    }

    /// Rebuilds the chain state at open: re-hashes the open segment up to `tail` and takes the
    /// previous footer's hash (checking that footer).
    pub fn resume(dev: &Device, sb: &Superblock, tail: u64) -> Result<Chain> {
        let mut c = Chain::empty();
        if tail == 0 {
            return Ok(c);
        }
        let seg = (tail - 1 - sb.data_start()) / sb.segment_size;
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
        if seg > 0 {
            match read_footer(dev, sb, seg - 1) {
                Ok(f) => c.prev_footer = f.hash(),
                Err(e) => {
                    // Keep serving and appending; the keyless check will name this footer.
                    tracing::error!(error = %e, "previous segment footer is damaged");
                    let at = sb.segment_start(seg - 1) + sb.segment_size - segment::BLOCK;
                    let raw = dev.read_vec(at, segment::BLOCK as usize)?;
                    c.prev_footer = *blake3::hash(&raw).as_bytes();
                }
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
            self.hasher = blake3::Hasher::new();
            self.hashed_to = sb.segment_start(seg);
        }
        debug_assert_eq!(piece.addr, self.hashed_to, "log pieces must be contiguous");
        self.hasher.update(&piece.bytes);
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
            used: self.hashed_to - start,
            content_hash: *self.hasher.finalize().as_bytes(),
            prev_footer: self.prev_footer,
        };
        dev.write_at(&f.encode(), start + sb.segment_size - segment::BLOCK)?;
        self.prev_footer = f.hash();
        Ok(Some(f))
    }
}

/// Reads and decodes the footer of segment `seg`.
pub fn read_footer(dev: &Device, sb: &Superblock, seg: u64) -> Result<SegmentFooter> {
    let at = sb.segment_start(seg) + sb.segment_size - segment::BLOCK;
    let b = dev.read_vec(at, segment::BLOCK as usize)?;
    SegmentFooter::decode(&b).map_err(|why| Error::corrupt("segment footer", dev.path(), at, why))
}
