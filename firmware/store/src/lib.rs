//! `odt-store`: the on-disk format of the ODT appliance, shared by the firmware and the
//! provider's host tools.
//!
//! Layers, from the bottom: [`device`] (positional I/O on an image file or block device),
//! [`superblock`] and [`segment`] (what is where), [`record`] (compressed, encrypted,
//! hashed extents) and [`journal`] (encrypted, CRC-framed metadata batches), [`namespace`]
//! (the tree the journal describes), [`store`] (group-committed writes, recovery, reads),
//! [`manifest`] (per-file BLAKE3 roots), [`keys`] and [`provision`] (key wrapping, new
//! device sets) and [`job`] (the provider's job file).

pub mod aligned;
pub mod bundle;
pub mod cipher;
pub mod control;
pub mod custody;
pub mod device;
pub mod digest;
pub mod error;
pub mod frame;
pub mod job;
pub mod journal;
pub mod keys;
pub mod log;
pub mod manifest;
pub mod namespace;
pub mod ovf;
pub mod provision;
pub mod receipt;
pub mod record;
pub mod seal;
pub mod segment;
pub mod store;
pub mod superblock;
pub mod tls;
pub mod units;
pub mod verify;

pub use error::{Error, Result};
pub use store::{Access, Attr, BulkRead, DirEntry, Locked, ReadScratch, Stats, Store};
