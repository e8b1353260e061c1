//! One entry of the namespace and its file's extent map: which record serves which bytes,
//! and how overwrites and truncates cut the map.

use std::collections::BTreeMap;

use super::live::LiveRecords;
use crate::format::journal::{Kind, Loc, Time};
use crate::format::tree_hash::CHUNK;

/// Which record a live extent comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecRef {
    /// Where the record is.
    pub loc: Loc,
    /// File offset of the record's first plaintext byte.
    pub start: u64,
    /// Plaintext length of the whole record.
    pub plain_len: u32,
    /// BLAKE3 of the record's whole plaintext.
    pub hash: [u8; 32],
    /// Generation the record was written as.
    pub generation: u64,
}

/// A live extent: `len` bytes served from `rec` at file offset `key - rec.start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes of the extent.
    pub len: u64,
    /// The record it comes from.
    pub rec: RecRef,
}

/// One entry of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Inode number (the NFS file id).
    pub id: u64,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files), target length (symlinks).
    pub size: u64,
    /// Last access.
    pub atime: Time,
    /// Last content change.
    pub mtime: Time,
    /// Last attribute change.
    pub ctime: Time,
    /// The directory holding its first name, and that name (the root: itself, no name).
    pub parent: u64,
    /// Its name in that directory.
    pub name: Vec<u8>,
    /// Its other names (hard links), as `(directory, name)`, oldest first.
    pub links: Vec<(u64, Vec<u8>)>,
    /// Directory entries by name.
    pub entries: BTreeMap<Vec<u8>, u64>,
    /// Live extents by file offset; gaps read as zeros.
    pub extents: BTreeMap<u64, Extent>,
    /// Chaining values of whole chunks, by chunk index (see [`crate::format::tree_hash`]).
    pub chunk_cvs: BTreeMap<u64, [u8; 32]>,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Number of subdirectories (for a directory's link count).
    pub subdirs: u32,
}

impl Inode {
    pub(super) fn new(
        id: u64,
        kind: Kind,
        parent: u64,
        name: Vec<u8>,
        mode: u32,
        time: Time,
    ) -> Inode {
        Inode {
            id,
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            atime: time,
            mtime: time,
            ctime: time,
            parent,
            name,
            links: Vec::new(),
            entries: BTreeMap::new(),
            extents: BTreeMap::new(),
            chunk_cvs: BTreeMap::new(),
            target: Vec::new(),
            subdirs: 0,
        }
    }

    /// Link count as NFS reports it.
    pub fn nlink(&self) -> u32 {
        match self.kind {
            Kind::Dir => 2 + self.subdirs,
            _ => 1 + self.links.len() as u32,
        }
    }

    /// Every name it has, as `(directory, name)`: the first, then the hard links.
    pub fn names(&self) -> impl Iterator<Item = (u64, &[u8])> {
        std::iter::once((self.parent, self.name.as_slice()))
            .chain(self.links.iter().map(|(p, n)| (*p, n.as_slice())))
    }

    /// Its names in directory `dir`, in name order.
    pub fn names_in(&self, dir: u64) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = self
            .names()
            .filter(|(p, _)| *p == dir)
            .map(|(_, n)| n)
            .collect();
        v.sort();
        v
    }

    /// Renames its name `(from_parent, from_name)` to `(to_parent, to_name)`.
    pub(super) fn move_name(&mut self, from: (u64, &[u8]), to: (u64, &[u8])) {
        if (self.parent, self.name.as_slice()) == from {
            self.parent = to.0;
            self.name = to.1.to_vec();
        } else if let Some(l) = self
            .links
            .iter_mut()
            .find(|(p, n)| (*p, n.as_slice()) == from)
        {
            *l = (to.0, to.1.to_vec());
        }
    }

    /// Drops its name `(parent, name)`; false if that was its last.
    pub(super) fn drop_name(&mut self, parent: u64, name: &[u8]) -> bool {
        if self.links.is_empty() {
            return false;
        }
        if (self.parent, self.name.as_slice()) == (parent, name) {
            let (p, n) = self.links.remove(0);
            self.parent = p;
            self.name = n;
        } else {
            self.links
                .retain(|(p, n)| (*p, n.as_slice()) != (parent, name));
        }
        true
    }

    /// Bytes of file content that records hold (not holes).
    pub fn stored_bytes(&self) -> u64 {
        self.extents.values().map(|e| e.len).sum()
    }

    /// Pieces covering `[off, off+len)`: `(file offset, length, Some(extent) or None=zeros)`.
    pub fn pieces(&self, off: u64, len: u64) -> Vec<(u64, u64, Option<Extent>)> {
        let end = off + len;
        let mut out = Vec::new();
        let mut at = off;
        // The extent starting at or before `off` may cover it.
        let first = self
            .extents
            .range(..=off)
            .next_back()
            .map(|(s, e)| (*s, *e));
        let rest = self.extents.range(off + 1..end).map(|(s, e)| (*s, *e));
        for (s, e) in first.into_iter().chain(rest) {
            let (es, ee) = (s, s + e.len);
            if ee <= at || es >= end {
                continue;
            }
            if es > at {
                out.push((at, es - at, None));
                at = es;
            }
            let stop = ee.min(end);
            out.push((at, stop - at, Some(e)));
            at = stop;
        }
        if at < end {
            out.push((at, end - at, None));
        }
        out
    }

    /// Cuts `[off, end)` out of the extent map; `live` follows the extents dropped and split.
    pub(super) fn punch(&mut self, off: u64, end: u64, live: &mut LiveRecords) {
        let overlapping: Vec<u64> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(s, e)| **s + e.len > off)
            .map(|(s, _)| *s)
            .collect();
        // Extents do not overlap, so going down by start their ends go down too: the first
        // one ending at or before `off` ends the overlapping run.
        for s in overlapping {
            let e = self.extents.remove(&s).unwrap();
            live.remove(e.rec.loc);
            if s < off {
                live.add(e.rec.loc);
                self.extents.insert(s, Extent { len: off - s, ..e });
            }
            if s + e.len > end {
                live.add(e.rec.loc);
                self.extents.insert(
                    end,
                    Extent {
                        len: s + e.len - end,
                        ..e
                    },
                );
            }
        }
        let first_chunk = off / CHUNK;
        let last_chunk = (end - 1) / CHUNK;
        let doomed: Vec<u64> = self
            .chunk_cvs
            .range(first_chunk..=last_chunk)
            .map(|(b, _)| *b)
            .collect();
        for b in doomed {
            self.chunk_cvs.remove(&b);
        }
    }

    pub(super) fn truncate(&mut self, size: u64, live: &mut LiveRecords) {
        if size < self.size {
            self.punch(size, u64::MAX, live);
            // The chunk that now ends early no longer has the chaining value of a whole chunk.
            let partial = size / CHUNK;
            if !size.is_multiple_of(CHUNK) {
                self.chunk_cvs.remove(&partial);
            }
        } else if size > self.size && !self.size.is_multiple_of(CHUNK) {
            self.chunk_cvs.remove(&(self.size / CHUNK));
        }
        self.size = size;
    }
}
