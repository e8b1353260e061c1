//! A read-only snapshot of the namespace, for the layers that walk the whole tree (bundle
//! checks, manifests, the seal, verification, the provider's ingest plan).
//!
//! Taking one costs a reference count: the store shares its namespace with the view and
//! copies it only if it changes while a view is alive (see [`Store::view`]). The view
//! answers from the state at the moment it was taken, whatever changes after.
//!
//! [`Store::view`]: crate::engine::Store::view

use std::sync::Arc;

use crate::engine::namespace::{Extent, Inode, Namespace, ROOT, Totals};
use crate::engine::pins::Pin;
use crate::format::journal::{Kind, Op, SealedBundle, Time};

/// The namespace as it was when [`Store::view`](crate::engine::Store::view) was called.
#[derive(Clone)]
pub struct View {
    ns: Arc<Namespace>,
    /// Keeps the segments this namespace's extents point into from being reused.
    _pin: Option<Arc<Pin>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("entries", &self.ns.len())
            .finish()
    }
}

/// One entry of a [`View`]: a file, directory or symlink.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    i: &'a Inode,
}

/// What the journal's seal op says (see [`View::seal`]).
#[derive(Debug, Clone, Copy)]
pub struct SealOp<'a> {
    /// When the store was sealed.
    pub time: Time,
    /// Root over every file's manifest entry.
    pub manifest_root: [u8; 32],
    /// BLAKE3 of every regular file's content, by file id.
    pub roots: &'a [(u64, [u8; 32])],
    /// The VM bundles found at the seal.
    pub bundles: &'a [SealedBundle],
}

impl View {
    pub(crate) fn new(ns: Arc<Namespace>, pin: Option<Pin>) -> View {
        View {
            ns,
            _pin: pin.map(Arc::new),
        }
    }

    /// BLAKE3 of the namespace as a checkpoint writes it (every entry with its names,
    /// attributes, extents and chunk values; the session epoch, the seal op and the
    /// custody log): equal digests mean equal namespaces.
    pub fn state_digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        let head = self.ns.checkpoint_head(0, Vec::new());
        h.update(&postcard::to_stdvec(&head).expect("head serialises"));
        let _ = self.ns.for_each_item(|i| {
            h.update(&postcard::to_stdvec(&i).expect("item serialises"));
            Ok::<_, ()>(())
        });
        *h.finalize().as_bytes()
    }

    /// The root directory.
    pub fn root(&self) -> Entry<'_> {
        self.get(ROOT).expect("the root always exists")
    }

    /// The entry `id`, if it exists.
    pub fn get(&self, id: u64) -> Option<Entry<'_>> {
        self.ns.get(id).ok().map(|i| Entry { i })
    }

    /// Every entry, the root included, by id.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.ns.inodes().map(|i| Entry { i })
    }

    /// Every regular file, by id.
    pub fn files(&self) -> impl Iterator<Item = Entry<'_>> {
        self.entries().filter(|e| e.kind() == Kind::File)
    }

    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// Always false: the root exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The path of `id` from the root, names joined by `/` (the root's is empty); for a
    /// file with several names, its first.
    pub fn path(&self, id: u64) -> Vec<u8> {
        self.ns.path(id)
    }

    /// Every path of `id`: its first, then those of its hard links.
    pub fn paths(&self, id: u64) -> Vec<Vec<u8>> {
        let Ok(i) = self.ns.get(id) else {
            return Vec::new();
        };
        i.names()
            .map(|(dir, name)| {
                let mut p = self.ns.path(dir);
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            })
            .collect()
    }

    /// Entries by kind and bytes of all files, as kept while ops apply.
    pub fn totals(&self) -> Totals {
        self.ns.totals()
    }

    /// The same totals counted by walking every entry (what [`View::totals`] must equal).
    pub fn recount(&self) -> Totals {
        Totals::of(self.ns.inodes())
    }

    /// The records the files' extents are served from, as kept while ops apply.
    pub fn live(&self) -> &crate::engine::namespace::LiveRecords {
        self.ns.live()
    }

    /// The same records found by walking every extent (what [`View::live`] must equal).
    /// With the same segment geometry, so that the per-segment counters are compared too.
    pub fn recount_live(&self) -> crate::engine::namespace::LiveRecords {
        let mut l = crate::engine::namespace::LiveRecords::of(self.ns.inodes());
        l.set_segments(&self.ns.live().segment_geometry());
        l
    }

    /// The custody log the journal holds (see [`crate::trip::custody`]).
    pub fn custody(&self) -> &crate::format::journal::CustodyLog {
        &self.ns.custody
    }

    /// The seal op, once the store is sealed.
    pub fn seal(&self) -> Option<SealOp<'_>> {
        match &self.ns.seal {
            Some(Op::Seal {
                time,
                manifest_root,
                roots,
                bundles,
            }) => Some(SealOp {
                time: *time,
                manifest_root: *manifest_root,
                roots,
                bundles,
            }),
            _ => None,
        }
    }
}

impl From<Namespace> for View {
    /// A view of a namespace built by hand (tests that need entries no client could
    /// create, as a forged journal would carry them).
    fn from(ns: Namespace) -> View {
        View::new(Arc::new(ns), None)
    }
}

impl<'a> Entry<'a> {
    /// The entry's id (its NFS file id).
    pub fn id(&self) -> u64 {
        self.i.id
    }

    /// File, directory or symlink.
    pub fn kind(&self) -> Kind {
        self.i.kind
    }

    /// Permission bits.
    pub fn mode(&self) -> u32 {
        self.i.mode
    }

    /// Owner.
    pub fn uid(&self) -> u32 {
        self.i.uid
    }

    /// Group.
    pub fn gid(&self) -> u32 {
        self.i.gid
    }

    /// Size in bytes (0 for directories).
    pub fn size(&self) -> u64 {
        self.i.size
    }

    /// Last access.
    pub fn atime(&self) -> Time {
        self.i.atime
    }

    /// Last content change.
    pub fn mtime(&self) -> Time {
        self.i.mtime
    }

    /// Last attribute change.
    pub fn ctime(&self) -> Time {
        self.i.ctime
    }

    /// The directory holding it (the root's is the root).
    pub fn parent(&self) -> u64 {
        self.i.parent
    }

    /// Its (first) name in its directory (the root's is empty).
    pub fn name(&self) -> &'a [u8] {
        &self.i.name
    }

    /// Its other names (hard links), as `(directory id, name)`.
    pub fn links(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        self.i.links.iter().map(|(p, n)| (*p, n.as_slice()))
    }

    /// How many names it has (a directory: 2 plus its subdirectories).
    pub fn nlink(&self) -> u32 {
        self.i.nlink()
    }

    /// A symlink's target (empty for anything else).
    pub fn target(&self) -> &'a [u8] {
        &self.i.target
    }

    /// A directory's entries as `(name, id)`, ordered by name (none for anything else).
    pub fn children(&self) -> impl Iterator<Item = (&'a [u8], u64)> + 'a {
        self.i.entries.iter().map(|(n, id)| (n.as_slice(), *id))
    }

    /// A file's live extents as `(file offset, extent)`, by offset; gaps read as zeros.
    pub fn extents(&self) -> impl Iterator<Item = (u64, Extent)> + 'a {
        self.i.extents.iter().map(|(o, e)| (*o, *e))
    }

    /// Whether any record holds bytes of `[off, off + len)` (false: all of it reads as
    /// zeros).
    pub fn has_data_in(&self, off: u64, len: u64) -> bool {
        // Extents do not overlap: only the last one starting before the end can reach in.
        self.i
            .extents
            .range(..off.saturating_add(len))
            .next_back()
            .is_some_and(|(s, e)| s + e.len > off)
    }

    /// Bytes of content that records hold (holes not counted).
    pub fn stored_bytes(&self) -> u64 {
        self.i.stored_bytes()
    }

    /// The BLAKE3 chaining value of the file's whole chunk number `chunk`, if the writes
    /// journaled it (see [`crate::format::tree_hash`]).
    pub fn chunk_cv(&self, chunk: u64) -> Option<[u8; 32]> {
        self.i.chunk_cvs.get(&chunk).copied()
    }
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.i.id)
            .field("kind", &self.i.kind)
            .field("name", &String::from_utf8_lossy(&self.i.name))
            .field("size", &self.i.size)
            .finish()
    }
}
