//! The on-disk format: how every structure on a device is laid out and encoded, and how it is
//! checked when read back. Codecs only (plus reading and writing a structure at its place on
//! a [`Device`](crate::device::Device)); what is written when is the engine's business.
//!
//! - [`superblock`]: the device layout, the set a device belongs to, the wrapped keys;
//! - [`segment`]: segment headers and footers, whose hashes chain the log;
//! - [`record`]: one extent of a file, compressed, encrypted and bound to its place;
//! - [`journal`]: batches of namespace and extent-map ops;
//! - [`checkpoint`]: the journal's compacted start (the replayed state) and its pointer;
//! - [`seal_record`]: the signed record in the seal slots and the seal code;
//! - [`tree_hash`]: the BLAKE3 root of a file from its chunks, and the records' digests;
//! - [`frame`]: the CRC frame around the small structures.

pub mod checkpoint;
pub mod frame;
pub mod journal;
pub mod record;
pub mod seal_record;
pub mod segment;
pub mod superblock;
pub mod tree_hash;

/// True if every byte is zero. Bytes never written read as zeros on a device (provisioning
/// and recovery zero the journal; the log past its tail is zeros), which is how readers
/// find where things end.
#[allow(unsafe_code)]
pub fn is_zero(b: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets aligned middles.
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}
