//! The cleaner: gives back the space of dead records. A closed segment whose live share is
//! low has its live records copied, byte for byte, to the log's tail (their authentication
//! binds file, offset and generation, not the address), the moves journaled; once they are
//! durable the segment's header and footer are zeroed and it is journaled as freed; it is
//! opened again (and punched) only once no view or read taken before the free is alive.
//!
//! One segment at a time, its live records read in bounded batches: memory stays bounded
//! whatever the device size. Runs in the background ([`Store::start_cleaner`]) and, before
//! a write is refused for want of space, in the writer's thread.
//!
//! Which segment (the policy, see docs/design.md "Cleaning"): while clients write, only
//! segments at most half live (copying half a segment frees a whole one, and the copies do
//! not compete much with the writers); once no client has written for [`IDLE_AFTER`], the
//! segment with the most dead bytes, if they are worth a copy ([`idle_min_gain`]), so that
//! deleted and overwritten data comes back within seconds on an idle appliance. The open
//! segment is never taken (see [`Store::pick_victim`]): space dead there comes back once it
//! is full and closed.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Access, Store, lock, per_segment};
use crate::error::{ErrorKind, Result, StoreError, one_line};
use crate::format::journal::{self, Loc, Op};
use crate::format::record;
use crate::format::segment;

/// The background cleaner takes segments at most this live (in 1/1000 of a segment's
/// record room): copying half a segment to free a whole one.
const BACKGROUND_LIVE: u64 = 500;
/// Before refusing a write, any segment whose cleaning frees at least this much of it.
const URGENT_LIVE: u64 = 970;
/// Record bytes read and copied per batch of moves.
const MOVE_BATCH: u64 = 8 << 20;
/// How often the background cleaner looks for work.
const TICK: Duration = Duration::from_millis(200);
/// How long after the last client write the store counts as idle, and the background
/// cleaner also takes segments that are mostly live but hold dead bytes worth a copy.
pub(super) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Room a segment's end may leave unused (a record that did not fit went to the next
/// segment): at most one record. Counted as not reclaimable, since the copies of the live
/// records leave as much at the end of the segment they fill.
const END_SLACK: u64 = record::MAX_PLAIN as u64 + 4096;

/// The dead bytes (beyond [`END_SLACK`]) a segment must hold for the idle cleaner to copy
/// its live records: a 1/128 share of its room, so that a small delete never costs a
/// segment's copy.
fn idle_min_gain(sb: &crate::format::superblock::Superblock) -> u64 {
    per_segment(sb) / 128
}

/// Which closed segments a cleaning step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The least live one, if at most this many thousandths of its room are live.
    AtMostLive(u64),
    /// The one with the most dead bytes, if they are worth a copy (the store is idle).
    MostDead,
}
/// How long a write that needs room waits for freed segments that views still read.
const WAIT_FOR_READERS: Duration = Duration::from_secs(10);

/// A segment to clean: device, segment number, its live records `(address, length)`.
type Victim = (u32, u64, Vec<(u64, u32)>);

/// What the cleaner keeps between steps.
#[derive(Debug, Default)]
pub(super) struct Cleaning {
    /// Segments it could not clean (a live record there does not decode), by device.
    skip: BTreeSet<(u32, u64)>,
    /// The journal's state when a search last found nothing to clean with this policy:
    /// nothing changed since, so nothing to search again.
    idle: Option<(u64, u64, Policy)>,
}

/// What a cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Segments freed.
    pub segments: u64,
    /// Bytes of live records copied.
    pub moved_bytes: u64,
}

impl Store {
    /// Cleans every closed segment at most half live, one after the other (what the
    /// background cleaner does). Refused once the store is sealed or read-only.
    pub fn clean(&self) -> Result<Cleaned> {
        let _admitted = self.writable()?;
        let mut state = lock(&self.cleaning);
        let mut done = Cleaned::default();
        self.release_freed()?;
        while let Some(moved) = self.clean_step(&mut state, Policy::AtMostLive(BACKGROUND_LIVE))? {
            done.segments += 1;
            done.moved_bytes += moved;
        }
        Ok(done)
    }

    /// What the background cleaner does on each tick: [`Store::clean`], then, while no
    /// client has written for [`IDLE_AFTER`], the segments holding the most dead bytes, one
    /// after the other, as long as their dead bytes are worth a copy. Refused once the store
    /// is sealed or read-only.
    pub fn clean_background(&self) -> Result<Cleaned> {
        let mut done = self.clean()?;
        let _admitted = self.writable()?;
        let mut state = lock(&self.cleaning);
        while self.is_idle() {
            let Some(moved) = self.clean_step(&mut state, Policy::MostDead)? else {
                break;
            };
            done.segments += 1;
            done.moved_bytes += moved;
        }
        Ok(done)
    }

    /// Whether no client wrote for [`IDLE_AFTER`].
    pub(super) fn is_idle(&self) -> bool {
        let last = self
            .last_write_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = self.opened.elapsed().as_millis() as u64;
        now.saturating_sub(last) >= IDLE_AFTER.as_millis() as u64
    }

    /// Notes a client write (the idle cleaner waits for [`IDLE_AFTER`] without one).
    pub(super) fn note_write(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_write_ms
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the background cleaner: a thread that, while the store is open and not
    /// sealed, cleans segments whose live share dropped to half, and, when no client has
    /// written for a while, those holding dead bytes worth a copy (see
    /// [`Store::clean_background`]); and gives freed segments back to the device once
    /// nobody reads them.
    pub fn start_cleaner(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let weak: Weak<Store> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("odt-cleaner".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    let Some(store) = weak.upgrade() else { return };
                    if store.access == Access::ReadOnly || store.is_sealed() {
                        return;
                    }
                    match store.clean_background() {
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::Store(StoreError::ReadOnly)) => {
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %one_line(&e), "segment cleaning failed");
                            std::thread::sleep(TICK * 25);
                        }
                    }
                }
            })
    }

    /// Makes room for a write of `need` bytes (the caller admitted it): cleans segments
    /// until enough is free or nothing more can be, and waits a while for freed segments
    /// that views taken before their free still read.
    pub(super) fn make_room(&self, need: u64) -> Result<()> {
        let mut state = lock(&self.cleaning);
        let deadline = Instant::now() + WAIT_FOR_READERS;
        let mut best = 0;
        let mut idle_steps = 0;
        loop {
            let free = self.writable_bytes(&lock(&self.core));
            if free >= need {
                return Ok(());
            }
            // Steps that free a segment but fill another as much gain nothing: stop after a
            // few in a row.
            if free > best {
                best = free;
                idle_steps = 0;
            }
            self.release_freed()?;
            if idle_steps < 4
                && self
                    .clean_step(&mut state, Policy::AtMostLive(URGENT_LIVE))?
                    .is_some()
            {
                idle_steps += 1;
                continue;
            }
            let waiting = {
                let core = lock(&self.core);
                (0..self.devs.len()).any(|d| {
                    let (now, all) = self.dev_free(&core, d);
                    now < all
                })
            };
            if !waiting || Instant::now() > deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives the freed segments nobody reads any more back to the device (punch-hole or
    /// discard where supported) and forgets the plaintext cached from them.
    fn release_freed(&self) -> Result<()> {
        let mut core = lock(&self.core);
        for d in 0..self.devs.len() {
            let sb = &self.sbs[d];
            let done: Vec<u64> = core.logs[d]
                .released
                .iter()
                .filter(|(_, tag)| self.pins.released(**tag))
                .map(|(s, _)| *s)
                .collect();
            for seg in done {
                core.logs[d].released.remove(&seg);
                let start = sb.segment_start(seg);
                let end = start + sb.segment_size;
                lock(&self.cache)
                    .retain(|((dev, a), _)| *dev != d as u32 || *a < start || *a >= end);
                // Under the store lock: the allocator cannot open it meanwhile.
                self.devs[d].discard(start, sb.segment_size)?;
            }
        }
        Ok(())
    }

    /// Cleans the closed segment `policy` picks, if any. Returns the live bytes it moved.
    fn clean_step(&self, state: &mut Cleaning, policy: Policy) -> Result<Option<u64>> {
        let key = {
            let core = lock(&self.core);
            (core.open_batch, core.ops.len() as u64, policy)
        };
        if state.idle == Some(key) || self.pick_victim(state, policy).is_none() {
            state.idle = Some(key);
            return Ok(None);
        }
        state.idle = None;
        // Everything queued reaches the devices first: the victim's records and footer are
        // then read from the device, and the segments opened so far are journaled.
        self.sync()?;
        let Some((d, seg, records)) = self.pick_victim(state, policy) else {
            return Ok(None);
        };
        let sb = &self.sbs[d as usize];
        let dev = &self.devs[d as usize];
        let mut moved = 0u64;
        let mut ticket = None;
        let mut k = 0;
        while k < records.len() {
            // Read a batch of live records outside the lock: a closed segment that is not
            // freed does not change.
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            while k < records.len() && (batch.is_empty() || bytes < MOVE_BATCH) {
                let (addr, len) = records[k];
                k += 1;
                let raw = dev.read_vec(addr, len as usize)?;
                let h = match record::Header::decode(&raw) {
                    Ok(h) if h.total_len() == len as usize => h,
                    _ => {
                        tracing::error!(
                            device = %dev.path().display(),
                            addr,
                            "a live record does not decode; its segment is not cleaned (run `odt verify`)"
                        );
                        state.skip.insert((d, seg));
                        return Ok(None);
                    }
                };
                bytes += len as u64;
                batch.push((Loc { dev: d, addr, len }, h, raw));
            }
            let mut core = self.wait_for_queue_room()?;
            self.reserve_journal(&core, batch.len() * 2)?;
            for (from, h, raw) in &batch {
                // Moved only if still live: a newer write or a removal that raced the read
                // has dropped it, and its range must keep what that change left.
                if core
                    .ns
                    .live()
                    .within(d, from.addr, from.addr + 1)
                    .next()
                    .is_none()
                {
                    continue;
                }
                let to = self.place_from(&mut core, d as usize, raw)?;
                let op = Op::Move {
                    id: h.file_id,
                    start: h.offset,
                    from: *from,
                    to,
                };
                core.ns_mut().apply(&op)?;
                journal::encode_op(&op, &mut core.ops);
                moved += from.len as u64;
            }
            ticket = Some(core.open_batch);
        }
        if let Some(t) = ticket {
            self.wait_durable(t)?;
        }
        let (start, footer) = (sb.segment_start(seg), sb.footer_start(seg));
        {
            let core = lock(&self.core);
            let live = core.ns.live();
            let left = live
                .segment_bytes(d, seg)
                .unwrap_or_else(|| live.bytes_within(d, start, start + sb.segment_size));
            debug_assert_eq!(
                left,
                live.bytes_within(d, start, start + sb.segment_size),
                "segment {seg}'s live counter"
            );
            if left > 0 {
                tracing::error!(
                    device = %dev.path().display(),
                    segment = seg,
                    left,
                    "live records stayed in a cleaned segment; it is not freed"
                );
                state.skip.insert((d, seg));
                return Ok(None);
            }
        }
        // Out of the footer chain for the keyless check before it is free for reuse (a
        // crash in between leaves an empty segment in use, cleaned again later).
        let zero = vec![0u8; segment::BLOCK as usize];
        dev.write_at(&zero, start)?;
        dev.write_at(&zero, footer)?;
        dev.sync()?;
        let ticket = {
            let mut core = lock(&self.core);
            self.reserve_journal(&core, 1)?;
            let op = Op::SegmentFreed {
                dev: d,
                segment: seg,
            };
            core.ns_mut().apply(&op)?;
            journal::encode_op(&op, &mut core.ops);
            // Views and reads pinned so far may still read the old addresses.
            let tag = self.pins.advance();
            core.logs[d as usize].released.insert(seg, tag);
            core.open_batch
        };
        self.wait_durable(ticket)?;
        tracing::debug!(device = d + 1, segment = seg, moved, "segment cleaned");
        Ok(Some(moved))
    }

    /// The closed segment `policy` picks, with its live records `(address, length)`: the
    /// least live one at most so live, or the one with the most dead bytes if they are worth
    /// a copy. Live bytes come from the per-segment counters (no walk of the records under
    /// the lock). The open segment is never taken (records are still appended to it). The
    /// one closed just before it may be: the open segment's footer links to its footer, but
    /// the keyless walk checks a link only where the segment before is still in the chain,
    /// and freeing takes it out (after a restart the chain resumes with a zero link,
    /// [`crate::engine::log::Chain::resume`]).
    fn pick_victim(&self, state: &Cleaning, policy: Policy) -> Option<Victim> {
        let core = lock(&self.core);
        let live_of = |d: u32, seg: u64, sb: &crate::format::superblock::Superblock| {
            let start = sb.segment_start(seg);
            let live = core.ns.live();
            live.segment_bytes(d, seg)
                .unwrap_or_else(|| live.bytes_within(d, start, start + sb.segment_size))
        };
        // (score, device, segment): the highest score wins.
        let mut best: Option<(u64, u32, u64)> = None;
        for (d, sb) in self.sbs.iter().enumerate() {
            let d32 = d as u32;
            let segs = core.ns.segments().dev(d32);
            let open = core.logs[d].segment(sb);
            let per = per_segment(sb);
            for (seg, _) in segs.in_use() {
                if Some(seg) == open || state.skip.contains(&(d32, seg)) {
                    continue;
                }
                let live = live_of(d32, seg, sb);
                let score = match policy {
                    Policy::AtMostLive(max_live) => {
                        // A segment is worth cleaning only if its records pack into less
                        // room than it holds: every segment ends with up to a record's
                        // worth of slack.
                        let limit = (per * max_live / 1000).min(per.saturating_sub(2 * END_SLACK));
                        if live > limit {
                            continue;
                        }
                        per - live
                    }
                    Policy::MostDead => {
                        let gain = per.saturating_sub(END_SLACK).saturating_sub(live);
                        if gain < idle_min_gain(sb).max(1) {
                            continue;
                        }
                        gain
                    }
                };
                if best.is_none_or(|(b, _, _)| score > b) {
                    best = Some((score, d32, seg));
                }
            }
        }
        let (_, d, seg) = best?;
        let sb = &self.sbs[d as usize];
        let start = sb.segment_start(seg);
        let records = core
            .ns
            .live()
            .within(d, start, start + sb.segment_size)
            .collect();
        Some((d, seg, records))
    }
}
