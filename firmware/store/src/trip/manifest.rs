//! Manifests: for every file its size, mode, times, extents and the BLAKE3 root of its
//! content (equal to `b3sum` of the file), and a root hash over all of them.
//!
//! Whole aligned 1 MiB blocks written in one piece carry their BLAKE3 chaining value from
//! the write path, so the root of a large file is merged from them without reading it back;
//! only blocks assembled from smaller writes, holes and the tail are hashed here.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use serde::{Deserialize, Serialize};

use crate::engine::namespace::BLOCK;
use crate::engine::{Entry, Store};
use crate::error::Result;
use crate::format::journal::{Kind, Time};

/// One file's manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    pub id: u64,
    /// Path from the root, `/`-separated, raw bytes.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
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
    let view = store.view();
    let root = view.root().id();
    let mut files = Vec::with_capacity(view.len());
    for i in view.entries().filter(|i| i.id() != root) {
        let blake3 = match i.kind() {
            Kind::File => file_root(store, i)?,
            _ => [0; 32],
        };
        files.push(FileManifest {
            id: i.id(),
            path: view.path(i.id()),
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
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest { files })
}

/// BLAKE3 root of one file's content.
pub fn file_root(store: &Store, i: Entry<'_>) -> Result<[u8; 32]> {
    let (id, size) = (i.id(), i.size());
    if size <= BLOCK {
        let (data, _) = store.read(id, 0, size as u32)?;
        return Ok(*blake3::hash(&data).as_bytes());
    }
    let blocks = size.div_ceil(BLOCK);
    let mut cvs: Vec<ChainingValue> = Vec::with_capacity(blocks as usize);
    for b in 0..blocks {
        let start = b * BLOCK;
        let len = BLOCK.min(size - start);
        if len == BLOCK
            && let Some(cv) = i.block_cv(b)
        {
            cvs.push(cv);
            continue;
        }
        let (data, _) = store.read(id, start, len as u32)?;
        let mut h = blake3::Hasher::new();
        h.set_input_offset(start);
        h.update(&data);
        cvs.push(h.finalize_non_root());
    }
    Ok(merge(&cvs, true).unwrap_or([0; 32]))
}

/// Merges the chaining values of consecutive 1 MiB blocks into the BLAKE3 tree's root:
/// the left subtree holds the largest power-of-two number of blocks smaller than the total,
/// as BLAKE3 builds its trees.
fn merge(cvs: &[ChainingValue], root: bool) -> Option<[u8; 32]> {
    if cvs.len() == 1 {
        return Some(cvs[0]);
    }
    let left_n = (cvs.len() - 1).next_power_of_two().max(1);
    let left_n = if left_n >= cvs.len() {
        left_n / 2
    } else {
        left_n
    };
    let l = merge(&cvs[..left_n], false)?;
    let r = merge(&cvs[left_n..], false)?;
    Some(if root {
        *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_blake3() {
        for blocks in [2usize, 3, 4, 5, 7, 8, 9] {
            for tail in [0usize, 1, 4096, 1000] {
                let size =
                    (blocks - 1) * BLOCK as usize + if tail == 0 { BLOCK as usize } else { tail };
                let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
                let mut cvs = Vec::new();
                for b in 0..blocks {
                    let s = b * BLOCK as usize;
                    let e = (s + BLOCK as usize).min(size);
                    let mut h = blake3::Hasher::new();
                    h.set_input_offset(s as u64);
                    h.update(&data[s..e]);
                    cvs.push(h.finalize_non_root());
                }
                assert_eq!(
                    merge(&cvs, true).unwrap(),
                    *blake3::hash(&data).as_bytes(),
                    "blocks {blocks} tail {tail}"
                );
            }
        }
    }
}
