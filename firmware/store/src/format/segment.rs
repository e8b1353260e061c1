//! Segments: fixed-size stretches of a device's data area that records are appended to.
//!
//! A segment opens with a header block and, once full (or at the seal), closes with a footer
//! block in its last 4 KiB. The footer holds the BLAKE3 hash of everything from the header to
//! the last record and the hash of the previous segment's footer, so the footers form a
//! chain: a keyless pass re-hashing the device catches bit rot, truncation and reordering.
//!
//! Segments are reused once the cleaner has moved their live records away, so a device's
//! write order is not its address order: header and footer carry the segment's `seq`, its
//! place in the device's write order, and the footers chain in that order. A freed
//! segment's header and footer are zeroed, which takes it out of the chain.

use serde::{Deserialize, Serialize};

use crate::format::frame;

/// The device block: a segment's header and its footer take one each, so records start
/// aligned for direct I/O. (File content comes in chunks, see [`crate::format::tree_hash`].)
pub const BLOCK: u64 = 4096;
const HEADER_MAGIC: &[u8; 8] = b"ODTSEGH2";
const FOOTER_MAGIC: &[u8; 8] = b"ODTSEGF2";

/// What opens a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// The set the device belongs to.
    pub set_id: u64,
    /// Device index in the set.
    pub device_index: u32,
    /// Segment number on the device.
    pub segment: u64,
    /// Place of this segment in the device's write order (0 for the first one opened).
    pub seq: u64,
}

impl SegmentHeader {
    /// The full header block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = frame::encode(HEADER_MAGIC, &postcard::to_stdvec(self).unwrap());
        b.resize(BLOCK as usize, 0);
        b
    }

    /// Decodes a header block.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let p = frame::decode(HEADER_MAGIC, b).map_err(|e| format!("segment header: {e}"))?;
        postcard::from_bytes(p).map_err(|e| format!("segment header: {e}"))
    }
}

/// What closes a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFooter {
    /// Device index in the set.
    pub device_index: u32,
    /// Segment number on the device.
    pub segment: u64,
    /// The header's `seq`: place in the device's write order.
    pub seq: u64,
    /// Bytes from the segment start (header included) that the hash covers.
    pub used: u64,
    /// BLAKE3 of those bytes.
    pub content_hash: [u8; 32],
    /// Hash of the footer of the segment written before (seq - 1; zeros for seq 0).
    pub prev_footer: [u8; 32],
}

impl SegmentFooter {
    /// The full footer block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = frame::encode(FOOTER_MAGIC, &postcard::to_stdvec(self).unwrap());
        b.resize(BLOCK as usize, 0);
        b
    }

    /// Hash that the next footer links to.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Decodes a footer block.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let p = frame::decode(FOOTER_MAGIC, b).map_err(|e| format!("segment footer: {e}"))?;
        postcard::from_bytes(p).map_err(|e| format!("segment footer: {e}"))
    }
}
