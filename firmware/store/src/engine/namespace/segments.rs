//! Which segments of each device the log uses, which the cleaner freed, and the order they
//! were opened in: the allocation state, journaled (`SegmentOpened`, `SegmentFreed`) and
//! rebuilt on replay like the rest of the namespace.

use std::collections::{BTreeMap, BTreeSet};

use crate::format::checkpoint::DevSegmentsImage;

/// The segments of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevSegments {
    /// Segments holding the log (opened and not freed since), by number, with their `seq`.
    in_use: BTreeMap<u64, u64>,
    /// Segments the cleaner freed, to be opened again.
    free: BTreeSet<u64>,
    /// Segments from this number on were never opened.
    fresh_from: u64,
    /// `seq` of the next segment opened.
    next_seq: u64,
    /// Segments freed so far (each cleaning counts).
    cleaned: u64,
}

impl DevSegments {
    /// Segments in use, by number, with their place in the write order.
    pub fn in_use(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.in_use.iter().map(|(s, q)| (*s, *q))
    }

    /// `seq` of segment `seg`, if it is in use.
    pub fn seq_of(&self, seg: u64) -> Option<u64> {
        self.in_use.get(&seg).copied()
    }

    /// The segment in use whose place in the write order is `seq`.
    pub fn with_seq(&self, seq: u64) -> Option<u64> {
        self.in_use
            .iter()
            .find(|(_, q)| **q == seq)
            .map(|(s, _)| *s)
    }

    /// Freed segments, by number.
    pub fn free(&self) -> &BTreeSet<u64> {
        &self.free
    }

    /// First segment never opened.
    pub fn fresh_from(&self) -> u64 {
        self.fresh_from
    }

    /// Segments freed by the cleaner so far.
    pub fn cleaned(&self) -> u64 {
        self.cleaned
    }

    /// `seq` the next opened segment gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Segments that are neither in use nor freed, of `count` on the device.
    pub fn fresh(&self, count: u64) -> u64 {
        count.saturating_sub(self.fresh_from)
    }

    /// The segment the allocator opens next when every freed one may be: a fresh one while
    /// there are any (so that a device is filled once before segments are reused), else the
    /// lowest freed one. `None` when the device is full.
    pub fn next(&self, count: u64) -> Option<u64> {
        if self.fresh_from < count {
            Some(self.fresh_from)
        } else {
            self.free.first().copied()
        }
    }

    fn open(&mut self, seg: u64, seq: u64) {
        self.free.remove(&seg);
        self.in_use.insert(seg, seq);
        self.fresh_from = self.fresh_from.max(seg + 1);
        self.next_seq = self.next_seq.max(seq + 1);
    }

    fn release(&mut self, seg: u64) {
        self.in_use.remove(&seg);
        self.free.insert(seg);
        self.cleaned += 1;
    }
}

/// The segments of every device, by device index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    devs: Vec<DevSegments>,
}

impl Segments {
    /// The segments of device `dev` (empty if nothing was ever opened there).
    pub fn dev(&self, dev: u32) -> &DevSegments {
        static EMPTY: DevSegments = DevSegments {
            in_use: BTreeMap::new(),
            free: BTreeSet::new(),
            fresh_from: 0,
            next_seq: 0,
            cleaned: 0,
        };
        self.devs.get(dev as usize).unwrap_or(&EMPTY)
    }

    fn dev_mut(&mut self, dev: u32) -> &mut DevSegments {
        let i = dev as usize;
        if self.devs.len() <= i {
            self.devs.resize_with(i + 1, DevSegments::default);
        }
        &mut self.devs[i]
    }

    /// Whether `seg` of `dev` is in use (so it may be freed).
    pub(super) fn is_in_use(&self, dev: u32, seg: u64) -> bool {
        self.dev(dev).seq_of(seg).is_some()
    }

    pub(super) fn open(&mut self, dev: u32, seg: u64, seq: u64) {
        self.dev_mut(dev).open(seg, seq);
    }

    pub(super) fn release(&mut self, dev: u32, seg: u64) {
        self.dev_mut(dev).release(seg);
    }

    /// The allocation state as a checkpoint carries it.
    pub fn image(&self) -> Vec<DevSegmentsImage> {
        self.devs
            .iter()
            .map(|d| DevSegmentsImage {
                in_use: d.in_use().collect(),
                free: d.free.iter().copied().collect(),
                fresh_from: d.fresh_from,
                next_seq: d.next_seq,
                cleaned: d.cleaned,
            })
            .collect()
    }

    /// The allocation state a checkpoint carried, refused where it cannot have come from
    /// opening and freeing segments (a segment both in use and free, one past the
    /// never-opened ones, a `seq` twice or not below the next one).
    pub fn from_image(image: &[DevSegmentsImage]) -> Result<Segments, String> {
        let mut devs = Vec::with_capacity(image.len());
        for (i, d) in image.iter().enumerate() {
            let in_use: BTreeMap<u64, u64> = d.in_use.iter().copied().collect();
            let free: BTreeSet<u64> = d.free.iter().copied().collect();
            let seqs: BTreeSet<u64> = in_use.values().copied().collect();
            let fits = |seg: &u64| *seg < d.fresh_from;
            if in_use.len() != d.in_use.len()
                || free.len() != d.free.len()
                || seqs.len() != in_use.len()
                || in_use.keys().any(|s| free.contains(s))
                || !in_use.keys().all(fits)
                || !free.iter().all(fits)
                || seqs.last().is_some_and(|q| *q >= d.next_seq)
            {
                return Err(format!("device {i}'s segment allocation is inconsistent"));
            }
            devs.push(DevSegments {
                in_use,
                free,
                fresh_from: d.fresh_from,
                next_seq: d.next_seq,
                cleaned: d.cleaned,
            });
        }
        Ok(Segments { devs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_segments_first_then_the_lowest_freed() {
        let mut s = Segments::default();
        assert_eq!(s.dev(1).next(3), Some(0));
        for (seg, seq) in [(0, 0), (1, 1), (2, 2)] {
            s.open(1, seg, seq);
        }
        assert_eq!(s.dev(1).next(3), None, "full");
        s.release(1, 2);
        s.release(1, 0);
        assert_eq!(s.dev(1).next(3), Some(0));
        s.open(1, 0, 3);
        assert_eq!(s.dev(1).next_seq(), 4);
        assert_eq!(s.dev(1).with_seq(3), Some(0));
        assert_eq!(s.dev(1).free().iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(Segments::from_image(&s.image()), Ok(s.clone()));
        let mut bad = s.image();
        bad[1].free.push(0);
        assert!(
            Segments::from_image(&bad).is_err(),
            "in use and free at once"
        );
        assert_eq!(s.dev(0).next(3), Some(0), "other devices untouched");
    }
}
