//! Pins: who may still read a record at an address the cleaner has since freed.
//!
//! Views and reads take a pin before they look up extents and hold it while they read the
//! records those extents name. Freeing a segment starts a new epoch and tags the segment
//! with the old one; the segment may be written again only once every pin of that epoch or
//! an earlier one is gone, so nobody reads a record's old address after it was reused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Table {
    epoch: u64,
    /// Pins alive, by the epoch they were taken in.
    live: BTreeMap<u64, usize>,
}

/// The pins of one store.
#[derive(Debug, Clone, Default)]
pub struct Pins(Arc<Mutex<Table>>);

/// A reader's pin; dropped when it has read what it looked up.
#[derive(Debug)]
pub struct Pin {
    table: Arc<Mutex<Table>>,
    epoch: u64,
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pins {
    /// A pin in the current epoch.
    pub fn pin(&self) -> Pin {
        let mut t = lock(&self.0);
        let epoch = t.epoch;
        *t.live.entry(epoch).or_default() += 1;
        Pin {
            table: self.0.clone(),
            epoch,
        }
    }

    /// Starts a new epoch; returns the tag of what is freed now (the epoch that ended).
    pub fn advance(&self) -> u64 {
        let mut t = lock(&self.0);
        t.epoch += 1;
        t.epoch - 1
    }

    /// Whether nothing pinned in epoch `tag` or before is still alive.
    pub fn released(&self, tag: u64) -> bool {
        lock(&self.0)
            .live
            .first_key_value()
            .is_none_or(|(e, _)| *e > tag)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        if let Some(n) = t.live.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                t.live.remove(&self.epoch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_segment_waits_for_the_pins_taken_before() {
        let pins = Pins::default();
        let before = pins.pin();
        let tag = pins.advance();
        let after = pins.pin();
        assert!(!pins.released(tag));
        drop(before);
        assert!(
            pins.released(tag),
            "a pin taken after the free does not hold it"
        );
        let tag2 = pins.advance();
        assert!(!pins.released(tag2));
        drop(after);
        assert!(pins.released(tag2));
    }
}
