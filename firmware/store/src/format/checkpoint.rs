//! Journal compaction on the device: the checkpoint (the state replay rebuilds, written out
//! so that the ops before it can be dropped) and the journal start pointer that says where
//! the journal begins.
//!
//! The journal region of device 0 (`journal_len` bytes) is laid out as
//! ```text
//! 0                 area A (half of what is usable)
//! half              area B
//! usable            start pointer slot 0 (4 KiB), then slot 1 (4 KiB)
//! ```
//! The journal lives in one area: a checkpoint (batches under the magic "ODTC", numbered
//! from 0, their plaintext a [`Head`], then the namespace's items, then [`Item::End`])
//! followed by ordinary op batches. Compaction writes a new checkpoint into the other area
//! (all zeros), syncs it, then writes the start pointer (the next generation, in the slot
//! of that generation's parity, in one 512-byte sector: written whole or not at all),
//! syncs, and only then zeros the old journal. A crash before the pointer's sync leaves
//! the old journal in force; after it, the new one. Nothing reads the area the journal is
//! not in (readers stop at the end of the journal's area), and a compaction zeros whatever
//! an interrupted one left there before it writes. A store written before compaction existed
//! has no pointer (both slots zero): its journal starts at byte 0, may run through the
//! whole usable region, and its first checkpoint goes after its end if it crosses the
//! middle.
//!
//! The pointer holds no secret and is read without the key: the seal pins the journal
//! bytes from the start it names to the journal's end, so a pointer moved after the seal
//! changes what is hashed and the seal check fails.

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{FormatError, Result};
use crate::format::frame;
use crate::format::is_zero;
use crate::format::journal::{CustodyLog, Kind, Loc, Op, Tails, Time};
use crate::format::superblock::{JOURNAL_START, Superblock};

/// Version of the checkpoint items this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of one start pointer slot.
pub const START_SLOT: u64 = 4096;
/// The pointer is written as one device sector, so that it is written whole or not at all.
const SECTOR: usize = 512;
const START_MAGIC: &[u8; 8] = b"ODTJSTRT";
/// Most extents or chunk chaining values one item carries (a large file's maps are split
/// into several items, so that no item, and no batch, grows with the file).
pub const ITEM_RUN: usize = 4096;

/// The state replay rebuilds besides the inodes, in one versioned place: whatever the
/// store learns from replaying ops and must know again after a compaction is a field
/// here (adding one bumps [`VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Layout of the items ([`VERSION`]).
    pub version: u32,
    /// Number of the first op batch after the checkpoint.
    pub next_seq: u64,
    /// Every device's log tail as of the checkpoint.
    pub tails: Tails,
    /// Highest session epoch journaled.
    pub epoch: u32,
    /// The id the next created entry gets.
    pub next_id: u64,
    /// The seal op, if the store was sealed.
    pub seal: Option<Op>,
    /// The custody log.
    pub custody: CustodyLog,
    /// Every device's segment allocation (by device index), as the cleaner left it.
    pub segments: Vec<DevSegmentsImage>,
    /// Inodes that follow (the root included).
    pub inodes: u64,
}

/// One device's segment allocation: which segments hold the log and in what order they
/// were opened, which the cleaner freed, and where never-opened segments begin. One entry
/// per segment in use or freed, so the head grows with the device, not with the files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevSegmentsImage {
    /// Segments in use: (segment number, its `seq` in the write order).
    pub in_use: Vec<(u64, u64)>,
    /// Segments freed by the cleaner, to be opened again.
    pub free: Vec<u64>,
    /// Segments from this number on were never opened.
    pub fresh_from: u64,
    /// `seq` of the next segment opened.
    pub next_seq: u64,
    /// Segments freed so far.
    pub cleaned: u64,
}

/// One inode, without its extent and chunk maps (those follow as their own items) and
/// without its directory entries (rebuilt from every inode's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeImage {
    /// Inode number.
    pub id: u64,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (files), target length (symlinks).
    pub size: u64,
    /// Last access.
    pub atime: Time,
    /// Last content change.
    pub mtime: Time,
    /// Last attribute change.
    pub ctime: Time,
    /// Directory of its first name (the root: itself).
    pub parent: u64,
    /// Its first name (the root: empty).
    pub name: Vec<u8>,
    /// Its other names, oldest first.
    pub links: Vec<(u64, Vec<u8>)>,
    /// Symlink target.
    pub target: Vec<u8>,
}

/// One live extent: `len` bytes at a file offset, served from a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentImage {
    /// File offset where the extent starts.
    pub offset: u64,
    /// Bytes of the extent.
    pub len: u64,
    /// The record.
    pub loc: Loc,
    /// File offset of the record's first plaintext byte.
    pub start: u64,
    /// Plaintext length of the whole record.
    pub plain_len: u32,
    /// BLAKE3 of the record's plaintext.
    pub hash: [u8; 32],
    /// Generation the record was written as.
    pub generation: u64,
}

/// One entry of a checkpoint's plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// First item of every checkpoint.
    Head(Head),
    /// An inode; its extents and chunk values follow before the next inode.
    Inode(InodeImage),
    /// Extents of the inode before, by offset.
    Extents(Vec<ExtentImage>),
    /// Chaining values of whole chunks of the inode before, by chunk number.
    ChunkCvs(Vec<(u64, [u8; 32])>),
    /// Last item: how many items came before it (the head included).
    End {
        /// Items before this one.
        items: u64,
    },
}

/// Serialises one item for a checkpoint batch's plaintext (length-prefixed, as ops are).
pub fn encode_item(item: &Item, out: &mut Vec<u8>) {
    let bytes = postcard::to_stdvec(item).expect("checkpoint item serialises");
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// Where the journal starts: the checkpoint at `start` (relative to the journal region),
/// followed by op batches numbered from `next_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// One more per compaction (from 1); the slot is `generation % 2`.
    pub generation: u64,
    /// Journal offset of the checkpoint.
    pub start: u64,
    /// Number of the first op batch after the checkpoint.
    pub next_seq: u64,
}

impl Start {
    /// The pointer as written: one sector.
    pub fn encode(&self) -> Vec<u8> {
        let mut img = frame::encode(
            START_MAGIC,
            &postcard::to_stdvec(self).expect("start pointer serialises"),
        );
        assert!(img.len() <= SECTOR);
        img.resize(SECTOR, 0);
        img
    }

    /// Decodes a slot; `Ok(None)` for a slot never written (all zeros).
    pub fn decode(slot: &[u8]) -> std::result::Result<Option<Start>, String> {
        if is_zero(slot) {
            return Ok(None);
        }
        let payload = frame::decode(START_MAGIC, slot).map_err(|e| e.to_string())?;
        // Nothing but zeros after the frame: every bit of the slot is accounted for.
        if !is_zero(&slot[payload.len() + frame::OVERHEAD..]) {
            return Err("bytes after the pointer".into());
        }
        let s: Start = postcard::from_bytes(payload).map_err(|e| e.to_string())?;
        if s.generation == 0 {
            return Err("generation 0".into());
        }
        Ok(Some(s))
    }
}

/// Journal bytes usable for batches: the region less the two pointer slots.
pub fn usable(sb: &Superblock) -> u64 {
    sb.journal_len.saturating_sub(2 * START_SLOT)
}

/// Start of area B (the end of area A).
pub fn half(sb: &Superblock) -> u64 {
    usable(sb) / 2 / START_SLOT * START_SLOT
}

/// Where a journal starting at `start` must end: the end of its area (the whole usable
/// region for a journal never compacted, `pointer` false).
pub fn limit(sb: &Superblock, start: u64, pointer: bool) -> u64 {
    if pointer && start < half(sb) {
        half(sb)
    } else {
        usable(sb)
    }
}

/// Where the next checkpoint of the journal `[start, end)` goes: the other area, or for a
/// journal never compacted that crosses the middle, a block past its end.
pub fn target(sb: &Superblock, start: u64, end: u64) -> u64 {
    if start >= half(sb) {
        0
    } else if end <= half(sb) {
        half(sb)
    } else {
        (end / START_SLOT + 2) * START_SLOT
    }
}

/// Device offset of pointer slot `i`.
fn slot_at(sb: &Superblock, i: u64) -> u64 {
    JOURNAL_START + usable(sb) + i * START_SLOT
}

/// Reads the start pointer of device 0: the newer of the two slots, `None` for a journal
/// never compacted. A damaged slot is refused (slots are written as one sector, so a crash
/// cannot leave one half written).
pub fn read_start(dev0: &Device, sb: &Superblock) -> Result<Option<Start>> {
    if sb.journal_len < 4 * START_SLOT {
        return Ok(None);
    }
    let mut best: Option<Start> = None;
    for i in 0..2 {
        let at = slot_at(sb, i);
        let raw = dev0.read_vec(at, SECTOR)?;
        let s = Start::decode(&raw).map_err(|why| {
            FormatError::corrupt(
                "journal start pointer",
                dev0.path(),
                at,
                format!("{why}; the journal's start is unknown"),
            )
        })?;
        if let Some(s) = s {
            if s.generation % 2 != i {
                return Err(FormatError::corrupt(
                    "journal start pointer",
                    dev0.path(),
                    at,
                    format!("generation {} in the wrong slot", s.generation),
                ));
            }
            if best.is_none_or(|b| b.generation < s.generation) {
                best = Some(s);
            }
        }
    }
    if let Some(s) = best
        && s.start >= usable(sb)
    {
        return Err(FormatError::corrupt(
            "journal start pointer",
            dev0.path(),
            slot_at(sb, s.generation % 2),
            "points past the journal",
        ));
    }
    Ok(best)
}

/// Writes the pointer into the slot of its generation (no sync).
pub fn write_start(dev0: &Device, sb: &Superblock, s: &Start) -> Result<()> {
    dev0.write_at(&s.encode(), slot_at(sb, s.generation % 2))
}

/// Whether device 0's journal holds anything (batches at its start or a start pointer).
pub fn journal_written(dev0: &Device, sb: &Superblock) -> Result<bool> {
    if !is_zero(&dev0.read_vec(JOURNAL_START, 4)?) {
        return Ok(true);
    }
    if sb.journal_len < 4 * START_SLOT {
        return Ok(false);
    }
    Ok(!is_zero(
        &dev0.read_vec(slot_at(sb, 0), 2 * START_SLOT as usize)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_pointer_roundtrip_and_damage() {
        let s = Start {
            generation: 3,
            start: 8192,
            next_seq: 77,
        };
        let img = s.encode();
        assert_eq!(img.len(), SECTOR);
        assert_eq!(Start::decode(&img), Ok(Some(s)));
        assert_eq!(Start::decode(&[0u8; SECTOR]), Ok(None));
        for i in 0..SECTOR {
            let mut d = img.clone();
            d[i] ^= 4;
            assert!(Start::decode(&d).is_err(), "flip at byte {i} undetected");
        }
    }

    #[test]
    fn areas_alternate_and_a_legacy_journal_moves_past_its_end() {
        let sb = crate::format::superblock::test_geometry(8 << 20, 8 << 20);
        let (u, h) = (usable(&sb), half(&sb));
        assert_eq!(u, (8 << 20) - 2 * START_SLOT);
        assert!(h <= u / 2 && h.is_multiple_of(START_SLOT));
        // Never compacted: the whole region; then A and B in turn.
        assert_eq!(limit(&sb, 0, false), u);
        assert_eq!(target(&sb, 0, 1000), h);
        assert_eq!(limit(&sb, h, true), u);
        assert_eq!(target(&sb, h, h + 1000), 0);
        assert_eq!(limit(&sb, 0, true), h);
        assert_eq!(target(&sb, 0, h), h);
        // A legacy journal past the middle: its checkpoint goes a block past its end.
        let t = target(&sb, 0, h + 10);
        assert!(t >= h + 10 + START_SLOT && t.is_multiple_of(START_SLOT));
        assert_eq!(limit(&sb, t, true), u);
    }

    #[test]
    fn items_encode_length_prefixed() {
        let mut out = Vec::new();
        encode_item(&Item::End { items: 5 }, &mut out);
        let n = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(n + 4, out.len());
        assert_eq!(
            postcard::from_bytes::<Item>(&out[4..]).unwrap(),
            Item::End { items: 5 }
        );
    }
}
