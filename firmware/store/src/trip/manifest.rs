//! Manifests: for every file its size, mode, times, extents and the BLAKE3 root of its
//! content (equal to `b3sum` of the file), and a root hash over all of them.
//!
//! Whole chunks written in one piece carry their BLAKE3 chaining value from the write path,
//! so the root of a large file is merged from them without reading it back; only chunks
//! assembled from smaller writes, holes and the tail are hashed here.

use serde::{Deserialize, Serialize};

use crate::engine::{Entry, Store};
use crate::error::{Result, StoreError, TripError};
use crate::format::journal::{Kind, Time};
use crate::format::tree_hash::{self, CHUNK};

/// One file's manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    /// File id in the store.
    pub id: u64,
    /// Path from the root, `/`-separated, raw bytes.
    pub path: Vec<u8>,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification.
    pub mtime: Time,
    /// Symlink target (empty otherwise).
    pub target: Vec<u8>,
    /// `(offset, len, generation, record digest)` of every live extent.
    pub extents: Vec<(u64, u64, u64, [u8; 32])>,
    /// BLAKE3 of the content (zeros for directories and symlinks).
    pub blake3: [u8; 32],
}

/// The whole store's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every entry but the root, by path.
    pub files: Vec<FileManifest>,
}

impl Manifest {
    /// Hash over every entry in path order: what the seal signs.
    pub fn root(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("odt 2026 manifest root");
        for f in &self.files {
            let b = postcard::to_stdvec(f).expect("manifest entry serialises");
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(&b);
        }
        *h.finalize().as_bytes()
    }
}

/// Builds the manifest of everything in the store. Reads back only what the write path did
/// not already hash.
pub fn build(store: &Store) -> Result<Manifest> {
    collect(store, |i| file_root(store, i))
}

/// The manifest of a sealed store from what the seal journaled (each file's BLAKE3 root
/// from the seal op), reading no file data; `Ok(None)` if the store is not sealed. Fails if
/// the result is not the manifest the seal signed (its root is in the seal op and the
/// signed seal record).
pub fn sealed(store: &Store) -> Result<Option<Manifest>> {
    let view = store.view();
    let Some(seal) = view.seal() else {
        return Ok(None);
    };
    let roots: std::collections::HashMap<u64, [u8; 32]> = seal.roots.iter().copied().collect();
    let m = collect(store, |i| {
        roots.get(&i.id()).copied().ok_or_else(|| {
            TripError::Invalid(format!(
                "file {} has no BLAKE3 root in the seal: the namespace changed after the \
                 seal; check the devices with `odt seal-check` and `odt verify`",
                String::from_utf8_lossy(&view.path(i.id()))
            ))
            .into()
        })
    })?;
    if m.root() != seal.manifest_root {
        return Err(TripError::Invalid(
            "the files on the devices no longer match the manifest the seal signed; check \
             the devices with `odt seal-check` and `odt verify`"
                .into(),
        )
        .into());
    }
    Ok(Some(m))
}

/// Every entry but the root, with `hash` giving each regular file's BLAKE3 root.
fn collect(store: &Store, mut hash: impl FnMut(Entry<'_>) -> Result<[u8; 32]>) -> Result<Manifest> {
    let view = store.view();
    let root = view.root().id();
    let mut files = Vec::with_capacity(view.len());
    for i in view.entries().filter(|i| i.id() != root) {
        let blake3 = match i.kind() {
            Kind::File => hash(i)?,
            _ => [0; 32],
        };
        let entry = FileManifest {
            id: i.id(),
            path: Vec::new(),
            kind: i.kind(),
            size: i.size(),
            mode: i.mode(),
            mtime: i.mtime(),
            target: i.target().to_vec(),
            extents: i
                .extents()
                .map(|(o, e)| (o, e.len, e.rec.generation, e.rec.hash))
                .collect(),
            blake3,
        };
        // A file with hard links has an entry under each of its names (same id, same
        // content): the seal covers every name, and a store without links hashes as before.
        for path in view.paths(i.id()) {
            files.push(FileManifest {
                path,
                ..entry.clone()
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest { files })
}

/// BLAKE3 root of one file's content: the chunk values the write path journaled, holes
/// hashed from a zero buffer, the other chunks read back and hashed (see
/// [`crate::format::tree_hash`]). Memory stays O(log size): the values are merged as they
/// come. A file larger than the store can hold is refused (see [`Store::max_file_size`]).
pub fn file_root(store: &Store, i: Entry<'_>) -> Result<[u8; 32]> {
    let (id, size) = (i.id(), i.size());
    let path = || String::from_utf8_lossy(&store.view().path(id)).into_owned();
    let limit = store.max_file_size();
    if size > limit {
        return Err(StoreError::FileTooLarge {
            file: path(),
            size,
            limit,
        }
        .into());
    }
    let mut root = tree_hash::RootBuilder::new(size);
    let mut start = 0;
    while start < size {
        let len = CHUNK.min(size - start);
        let journaled = tree_hash::chaining_value_counts(size, start)
            .then(|| i.chunk_cv(start / CHUNK))
            .flatten();
        root.push(match journaled {
            Some(cv) => cv,
            None if !i.has_data_in(start, len) => tree_hash::zero_chunk_value(size, start, len),
            None => {
                let (data, _) = store.read(id, start, len as u32)?;
                tree_hash::chunk_value(size, start, &data)
            }
        });
        start += len;
    }
    Ok(root.finish())
}
