//! `odt-store`: the on-disk format of the ODT appliance and the store built on it, shared by
//! the firmware and the provider's host tools.
//!
//! Layers, from the bottom (each uses only those below it):
//! - [`device`]: positional I/O on an image file or block device;
//! - [`crypto`]: AEAD session keys, the job's secrets and their wrapping;
//! - [`format`]: the codecs of everything on a device (superblock, segments, records,
//!   journal, seal record);
//! - [`engine`]: the log, the namespace and the [`Store`] (group-committed writes, recovery,
//!   reads);
//! - [`trip`]: the logic of one trip (job and provisioning, VM bundle checks, manifests, the
//!   seal and its check, verification, the ingest receipt, the control API's messages).
//!
//! [`error`] is shared by all of them; [`units`] formats sizes and times for people.
//!
//! No file may be larger than the device set's capacity ([`Store::max_file_size`]): a file's
//! BLAKE3 is the standard one (what `b3sum` prints), which hashes every byte of its apparent
//! size, holes included, so the limit is what keeps the seal's cost that of a full device.

pub mod crypto;
pub mod device;
pub mod engine;
pub mod error;
pub mod format;
pub mod trip;
pub mod units;

pub use engine::{Access, Attr, BulkRead, Damage, DirEntry, Locked, ReadScratch, Stats, Store};
pub use error::{Error, Result};
