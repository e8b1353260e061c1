//! Which records on the devices the namespace still refers to, and how many bytes they hold.
//!
//! A record stays live while at least one extent of some file is served from it: an
//! overwrite that covers only part of a record splits its extent, and both parts keep it.
//! Kept up to date as ops apply (live and on replay), so the space held by dead records is
//! known without walking every file, and the records of one segment can be listed by
//! address. Once the devices' segment geometry is set, the live bytes of every segment are
//! counted too (one counter per segment of the device, whatever the number of files), so
//! the cleaner chooses its victim without walking the records.

use std::collections::BTreeMap;

use crate::format::journal::Loc;

/// One live record: its length on the device and how many extents refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refs {
    len: u32,
    extents: u32,
}

/// Where the segments of one device lie (from its superblock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentGeometry {
    /// Byte offset of segment 0.
    pub data_start: u64,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Segments on the device.
    pub count: u64,
}

/// Live bytes per segment of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegmentCounts {
    geometry: SegmentGeometry,
    live: Vec<u64>,
}

impl SegmentCounts {
    fn counter(&mut self, addr: u64) -> Option<&mut u64> {
        let g = self.geometry;
        let seg = addr.checked_sub(g.data_start)? / g.segment_size;
        // A record outside every segment cannot be cleaned: nothing to count.
        self.live.get_mut(usize::try_from(seg).ok()?)
    }
}

/// The live records of a namespace, by device and address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveRecords {
    by_loc: BTreeMap<(u32, u64), Refs>,
    bytes: u64,
    /// Per device, once [`LiveRecords::set_segments`] was called.
    segments: Vec<SegmentCounts>,
}

impl LiveRecords {
    /// One more extent refers to the record at `loc`.
    pub(super) fn add(&mut self, loc: Loc) {
        let r = self.by_loc.entry((loc.dev, loc.addr)).or_insert(Refs {
            len: loc.len,
            extents: 0,
        });
        r.extents += 1;
        if r.extents == 1 {
            self.bytes += loc.len as u64;
            if let Some(c) = self.counter(loc.dev, loc.addr) {
                *c += loc.len as u64;
            }
        }
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
            let len = r.len as u64;
            self.bytes -= len;
            self.by_loc.remove(&key);
            if let Some(c) = self.counter(loc.dev, loc.addr) {
                debug_assert!(*c >= len, "a segment's live bytes went below zero");
                *c = c.saturating_sub(len);
            }
        }
    }

    fn counter(&mut self, dev: u32, addr: u64) -> Option<&mut u64> {
        self.segments.get_mut(dev as usize)?.counter(addr)
    }

    /// Starts counting live bytes per segment with the devices' geometry (by device index),
    /// from the records live now; kept up to date by every change after.
    pub fn set_segments(&mut self, geometry: &[SegmentGeometry]) {
        let mut counts: Vec<SegmentCounts> = geometry
            .iter()
            .map(|g| SegmentCounts {
                geometry: *g,
                live: vec![0; usize::try_from(g.count).unwrap_or(usize::MAX)],
            })
            .collect();
        for ((dev, addr), r) in &self.by_loc {
            if let Some(c) = counts.get_mut(*dev as usize).and_then(|s| s.counter(*addr)) {
                *c += r.len as u64;
            }
        }
        self.segments = counts;
    }

    /// The geometry set with [`LiveRecords::set_segments`] (empty before).
    pub fn segment_geometry(&self) -> Vec<SegmentGeometry> {
        self.segments.iter().map(|s| s.geometry).collect()
    }

    /// Live bytes of segment `seg` of device `dev`, from its counter: what
    /// [`LiveRecords::bytes_within`] its range sums, without the walk. `None` when no
    /// geometry is set for `dev` or `seg` is past its segments.
    pub fn segment_bytes(&self, dev: u32, seg: u64) -> Option<u64> {
        let s = self.segments.get(dev as usize)?;
        s.live.get(usize::try_from(seg).ok()?).copied()
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

    /// Random adds and removes (records on both devices, some shared by several extents,
    /// some outside every segment) keep every segment's counter equal to the bytes its
    /// range holds, whether counting started before or after the records were added.
    #[test]
    fn segment_counters_equal_the_walk_after_random_changes() {
        let geo = [
            SegmentGeometry {
                data_start: 1 << 20,
                segment_size: 4 << 20,
                count: 6,
            },
            SegmentGeometry {
                data_start: 2 << 20,
                segment_size: 8 << 20,
                count: 3,
            },
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..20 {
            let mut l = LiveRecords::default();
            if round % 2 == 0 {
                l.set_segments(&geo);
            }
            let mut refs: Vec<Loc> = Vec::new();
            for step in 0..2000 {
                if round % 2 == 1 && step == 1000 {
                    l.set_segments(&geo);
                }
                if refs.is_empty() || next(3) > 0 {
                    let loc = if !refs.is_empty() && next(4) == 0 {
                        refs[next(refs.len() as u64) as usize]
                    } else {
                        let dev = next(2) as u32;
                        // Up to past the last segment, and before the first.
                        let addr = next(30 << 20);
                        Loc {
                            dev,
                            addr,
                            len: 1 + next(70_000) as u32,
                        }
                    };
                    // One address, one record: a second extent refers to the same one.
                    let loc = match l.by_loc.get(&(loc.dev, loc.addr)) {
                        Some(r) => Loc { len: r.len, ..loc },
                        None => loc,
                    };
                    l.add(loc);
                    refs.push(loc);
                } else {
                    let loc = refs.swap_remove(next(refs.len() as u64) as usize);
                    l.remove(loc);
                }
            }
            for (dev, g) in geo.iter().enumerate() {
                for seg in 0..g.count {
                    let start = g.data_start + seg * g.segment_size;
                    assert_eq!(
                        l.segment_bytes(dev as u32, seg),
                        Some(l.bytes_within(dev as u32, start, start + g.segment_size)),
                        "round {round}, device {dev}, segment {seg}"
                    );
                }
                assert_eq!(l.segment_bytes(dev as u32, g.count), None);
            }
            let mut walked = l.clone();
            walked.set_segments(&geo);
            assert_eq!(walked, l, "counted from scratch = kept");
        }
    }
}
