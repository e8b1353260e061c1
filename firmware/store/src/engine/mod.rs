//! The storage engine: the log of records on each device ([`log`]), the namespace the
//! journal describes ([`namespace`]) and its read-only snapshots ([`view`]), and the [`Store`] that ties them together (group
//! commit, recovery, reads and writes). It knows files, extents and bytes; nothing of VM
//! bundles, manifests or seals beyond closing the log under a signed record.

pub mod log;
pub mod namespace;
pub mod observer;
pub mod pins;
pub mod store;
pub mod view;

pub use namespace::{MAX_NAME, MAX_SYMLINK, ROOT, check_name};
pub use observer::WriteObserver;
pub use store::{Access, Attr, BulkRead, Damage, DirEntry, Locked, ReadScratch, Stats, Store};
pub use view::{Entry, SealOp, View};
