//! Where records go: the open segment of each device, then the next segment the allocator
//! opens (a never-used one while there are any, else the lowest one the cleaner freed and
//! nobody reads any more), and how much room that leaves.

use super::{Core, Store, lock, per_segment};
use crate::error::{Result, StoreError};
use crate::format::journal::{self, Loc, Op};

impl Store {
    /// Bytes free for records on device `d`: (now, counting also the freed segments that a
    /// view or read taken before their free may still read and that are not reusable yet).
    pub(super) fn dev_free(&self, core: &Core, d: usize) -> (u64, u64) {
        let sb = &self.sbs[d];
        let segs = core.ns.segments().dev(d as u32);
        let log = &core.logs[d];
        let waiting = log
            .released
            .iter()
            .filter(|(_, tag)| !self.pins.released(**tag))
            .count() as u64;
        let segments = segs.fresh(sb.segment_count()) + segs.free().len() as u64;
        let room = log.room(sb);
        let per = per_segment(sb);
        (
            room + (segments - waiting.min(segments)) * per,
            room + segments * per,
        )
    }

    /// Bytes writers may fill now on all devices: what is free less the segment per device
    /// kept for the cleaner (which needs room to copy live records into before it can free
    /// anything).
    pub(super) fn writable_bytes(&self, core: &Core) -> u64 {
        (0..self.devs.len())
            .map(|d| {
                self.dev_free(core, d)
                    .0
                    .saturating_sub(per_segment(&self.sbs[d]))
            })
            .sum()
    }

    /// The segment device `d` would open next, if one may be opened now.
    fn next_segment(&self, core: &Core, d: usize) -> Option<u64> {
        let count = self.sbs[d].segment_count();
        let segs = core.ns.segments().dev(d as u32);
        if segs.fresh_from() < count {
            return Some(segs.fresh_from());
        }
        let released = &core.logs[d].released;
        segs.free()
            .iter()
            .copied()
            .find(|s| released.get(s).is_none_or(|tag| self.pins.released(*tag)))
    }

    /// The segment the seal names as the one the log of device `d` would continue in (its
    /// header must still be zeros when the courier checks the seal), or the segment count
    /// when the device is full.
    pub(crate) fn sealed_next_segment(&self, d: usize) -> u64 {
        let core = lock(&self.core);
        let count = self.sbs[d].segment_count();
        core.ns
            .segments()
            .dev(d as u32)
            .next(count)
            .unwrap_or(count)
    }

    /// Places `bytes` on a device's log, trying device `first` first and then the others in
    /// turn, opening a new segment where the open one is full (journaled with the record).
    pub(super) fn place_from(&self, core: &mut Core, first: usize, bytes: &[u8]) -> Result<Loc> {
        let n = self.devs.len();
        for k in 0..n {
            let d = (first + k) % n;
            let sb = &self.sbs[d];
            if let Some(addr) = core.logs[d].append(sb, bytes) {
                return Ok(Loc {
                    dev: d as u32,
                    addr,
                    len: bytes.len() as u32,
                });
            }
            let Some(seg) = self.next_segment(core, d) else {
                continue;
            };
            let seq = core.ns.segments().dev(d as u32).next_seq();
            let op = Op::SegmentOpened {
                dev: d as u32,
                segment: seg,
                seq,
            };
            core.ns_mut().apply(&op)?;
            journal::encode_op(&op, &mut core.ops);
            if core.logs[d].released.remove(&seg).is_some() {
                // Plaintext cached by address belongs to the records freed from it.
                let (start, end) = (sb.segment_start(seg), sb.segment_start(seg + 1));
                lock(&self.cache)
                    .retain(|((dev, a), _)| *dev != d as u32 || *a < start || *a >= end);
            }
            core.logs[d].open_segment(sb, seg, seq);
            let addr = core.logs[d]
                .append(sb, bytes)
                .expect("a record fits an empty segment");
            return Ok(Loc {
                dev: d as u32,
                addr,
                len: bytes.len() as u32,
            });
        }
        Err(StoreError::NoSpace(format!(
            "the data devices are full ({} device(s), every segment in use)",
            n
        ))
        .into())
    }
}
