//! Which records on the devices the namespace still refers to, and how many bytes they hold.
//!
//! A record stays live while at least one extent of some file is served from it: an
//! overwrite that covers only part of a record splits its extent, and both parts keep it.
//! Kept up to date as ops apply (live and on replay), so the space held by dead records is
//! known without walking every file, and the records of one segment can be listed by
//! address.

use std::collections::BTreeMap;

use crate::format::journal::Loc;

/// One live record: its length on the device and how many extents refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refs {
    len: u32,
    extents: u32,
}

/// The live records of a namespace, by device and address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveRecords {
    by_loc: BTreeMap<(u32, u64), Refs>,
    bytes: u64,
}

impl LiveRecords {
    /// One more extent refers to the record at `loc`.
    pub(super) fn add(&mut self, loc: Loc) {
        let r = self.by_loc.entry((loc.dev, loc.addr)).or_insert(Refs {
            len: loc.len,
            extents: 0,
        });
        if r.extents == 0 {
            self.bytes += loc.len as u64;
        }
        r.extents += 1;
    }

    /// One extent fewer refers to the record at `loc`; the last one makes it dead.
    pub(super) fn remove(&mut self, loc: Loc) {
        let key = (loc.dev, loc.addr);
        let Some(r) = self.by_loc.get_mut(&key) else {
            debug_assert!(false, "an extent dropped a record nothing referred to");
            return;
        };
        r.extents -= 1;
        if r.extents == 0 {
            self.bytes -= r.len as u64;
            self.by_loc.remove(&key);
        }
    }

    /// Bytes (record headers and ciphertext) of all live records.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of live records.
    pub fn count(&self) -> usize {
        self.by_loc.len()
    }

    /// Live records of device `dev` in `[start, end)`, as `(address, length)`, by address.
    pub fn within(&self, dev: u32, start: u64, end: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.by_loc
            .range((dev, start)..(dev, end))
            .map(|((_, addr), r)| (*addr, r.len))
    }

    /// Bytes of the live records of device `dev` in `[start, end)`.
    pub fn bytes_within(&self, dev: u32, start: u64, end: u64) -> u64 {
        self.within(dev, start, end).map(|(_, l)| l as u64).sum()
    }

    /// The live records of a walk over every extent (what the kept ones must equal).
    pub fn of<'a>(inodes: impl Iterator<Item = &'a super::Inode>) -> LiveRecords {
        let mut l = LiveRecords::default();
        for i in inodes {
            for e in i.extents.values() {
                l.add(e.rec.loc);
            }
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(addr: u64, len: u32) -> Loc {
        Loc { dev: 0, addr, len }
    }

    #[test]
    fn a_record_is_live_while_one_extent_refers_to_it() {
        let mut l = LiveRecords::default();
        l.add(loc(100, 40));
        l.add(loc(100, 40));
        l.add(loc(500, 7));
        assert_eq!((l.bytes(), l.count()), (47, 2));
        l.remove(loc(100, 40));
        assert_eq!(l.bytes(), 47, "one extent still refers to it");
        l.remove(loc(100, 40));
        assert_eq!((l.bytes(), l.count()), (7, 1));
        assert_eq!(l.within(0, 0, 1000).collect::<Vec<_>>(), vec![(500, 7)]);
        assert_eq!(l.bytes_within(0, 0, 500), 0);
        assert_eq!(l.bytes_within(1, 0, 1000), 0);
    }
}
