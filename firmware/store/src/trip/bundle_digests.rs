//! SHA-256 of files computed on the way in, so that the pre-seal check of `.mf` digests does
//! not re-read terabytes.
//!
//! NFS clients send a file mostly in order, but several writes are in flight and the Linux
//! client reorders about a third of them: a write that arrives ahead of the hash's position
//! is parked (bounded memory) until the gap fills. Anything else — an overwrite, a truncate,
//! too much parked — gives up on that file, and the check re-reads it. The state lives in
//! memory only; after a restart, files are re-read too.
//!
//! The tracker watches the store through its [`WriteObserver`] hook: [`attach`] it right
//! after unlocking, and the bundle check finds it again with [`Tracker::of`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::{Store, WriteObserver};

use sha2::Digest;

/// Parked bytes one file may hold.
const PER_FILE: u64 = 32 << 20;
/// Parked bytes all files together may hold.
const TOTAL: u64 = 64 << 20;

/// Names whose content is worth hashing on the way in: the members of VM bundles.
const TRACKED: &[&str] = &[
    "vmdk", "ovf", "mf", "cert", "iso", "nvram", "img", "raw", "vhd", "vhdx", "qcow2",
];

/// Whether a file with this name is hashed on the way in: any dotted part names a bundle
/// member type (so rsync's temporary `.disk.vmdk.Xy12ab` counts too).
pub fn tracked_name(name: &[u8]) -> bool {
    String::from_utf8_lossy(name)
        .to_ascii_lowercase()
        .split('.')
        .skip(1)
        .any(|part| TRACKED.contains(&part))
}

#[derive(Default)]
struct FileDigest {
    next: u64,
    sha: sha2::Sha256,
    parked: BTreeMap<u64, Vec<u8>>,
    parked_bytes: u64,
    broken: bool,
}

/// Running SHA-256 per file.
#[derive(Default)]
pub struct Tracker {
    files: Mutex<HashMap<u64, Arc<Mutex<FileDigest>>>>,
    parked: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracker {
    /// Starts tracking a new, empty file.
    pub fn start(&self, id: u64) {
        lock(&self.files).insert(id, Arc::new(Mutex::new(FileDigest::default())));
    }

    fn entry(&self, id: u64) -> Option<Arc<Mutex<FileDigest>>> {
        lock(&self.files).get(&id).cloned()
    }

    fn give_up(&self, f: &mut FileDigest) {
        f.broken = true;
        self.parked.fetch_sub(f.parked_bytes, Ordering::Relaxed);
        f.parked.clear();
        f.parked_bytes = 0;
    }

    /// Feeds a durable write.
    pub fn wrote(&self, id: u64, offset: u64, data: &[u8]) {
        let Some(e) = self.entry(id) else { return };
        let mut guard = lock(&e);
        let f = &mut *guard;
        if f.broken {
            return;
        }
        let end = offset + data.len() as u64;
        let overlaps_parked = f
            .parked
            .range(..end)
            .next_back()
            .is_some_and(|(o, d)| o + d.len() as u64 > offset);
        if offset < f.next || overlaps_parked {
            self.give_up(f);
            return;
        }
        if offset > f.next {
            let n = data.len() as u64;
            if f.parked_bytes + n > PER_FILE || self.parked.load(Ordering::Relaxed) + n > TOTAL {
                self.give_up(f);
                return;
            }
            f.parked.insert(offset, data.to_vec());
            f.parked_bytes += n;
            self.parked.fetch_add(n, Ordering::Relaxed);
            return;
        }
        f.sha.update(data);
        f.next = end;
        while let Some(d) = f.parked.remove(&{ f.next }) {
            f.sha.update(&d);
            f.next += d.len() as u64;
            f.parked_bytes -= d.len() as u64;
            self.parked.fetch_sub(d.len() as u64, Ordering::Relaxed);
        }
    }

    /// The content changed other than by appending (truncate, extend, overwrite).
    pub fn resized(&self, id: u64, size: u64) {
        if let Some(e) = self.entry(id) {
            let mut f = lock(&e);
            if size != f.next || !f.parked.is_empty() {
                self.give_up(&mut f);
            }
        }
    }

    /// The file is gone.
    pub fn forget(&self, id: u64) {
        if let Some(e) = lock(&self.files).remove(&id) {
            let f = lock(&e);
            self.parked.fetch_sub(f.parked_bytes, Ordering::Relaxed);
        }
    }

    /// SHA-256 of the file if every byte of its `size` went through in order.
    pub fn sha256(&self, id: u64, size: u64) -> Option<[u8; 32]> {
        let e = self.entry(id)?;
        let f = lock(&e);
        (!f.broken && f.next == size && f.parked.is_empty())
            .then(|| f.sha.clone().finalize().into())
    }
}

impl WriteObserver for Tracker {
    fn created(&self, id: u64, name: &[u8]) {
        if tracked_name(name) {
            self.start(id);
        }
    }

    fn wrote(&self, id: u64, offset: u64, data: &[u8]) {
        Tracker::wrote(self, id, offset, data);
    }

    fn resized(&self, id: u64, size: u64) {
        Tracker::resized(self, id, size);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Tracker {
    /// The tracker attached to `store`, if any.
    pub fn of(store: &Store) -> Option<&Tracker> {
        store.observer()?.as_any().downcast_ref::<Tracker>()
    }
}

/// Makes `store` hash bundle files as they arrive (the appliance does this right after
/// unlocking, before clients write). Does nothing if a tracker is attached already.
pub fn attach(store: &Store) {
    let _already = store.set_observer(Arc::new(Tracker::default()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reordered_writes_hash_like_sequential_ones() {
        let t = Tracker::default();
        t.start(1);
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        t.wrote(1, 2000, &data[2000..]);
        t.wrote(1, 0, &data[..1000]);
        assert_eq!(t.sha256(1, 3000), None);
        t.wrote(1, 1000, &data[1000..2000]);
        let want: [u8; 32] = sha2::Sha256::digest(&data).into();
        assert_eq!(t.sha256(1, 3000), Some(want));
        assert_eq!(t.parked.load(Ordering::Relaxed), 0);
        t.wrote(1, 10, b"overwrite");
        assert_eq!(t.sha256(1, 3000), None);
        assert!(tracked_name(b"VM-disk1.VMDK") && !tracked_name(b"notes.txt"));
        assert!(tracked_name(b".disk.vmdk.Xy12ab") && !tracked_name(b"vmdk"));
    }
}
