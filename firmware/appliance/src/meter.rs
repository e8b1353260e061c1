//! Activity counters of the export: bytes written and read, entries created and removed,
//! errors; the client write rate for `odt status`; and the periodic activity line in the log.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Seconds of history the write rate averages over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Counters, updated by the NFS adapter.
#[derive(Debug, Default)]
pub struct Meter {
    written: AtomicU64,
    read: AtomicU64,
    created: AtomicU64,
    removed: AtomicU64,
    errors: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes written by clients.
    pub written: u64,
    /// Bytes read by clients.
    pub read: u64,
    /// Files, directories and symlinks created.
    pub created: u64,
    /// Entries removed.
    pub removed: u64,
    /// Requests that failed for a reason other than a routine answer.
    pub errors: u64,
}

impl Meter {
    /// Counts `n` bytes written.
    pub fn wrote(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes read.
    pub fn read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a created entry.
    pub fn created(&self) {
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a removed entry.
    pub fn removed(&self) {
        self.removed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed request.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        Totals {
            written: self.written.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            created: self.created.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// Records a sample of the written-bytes counter; call about once a second.
    pub fn sample(&self) {
        self.sample_at(Instant::now());
    }

    fn sample_at(&self, now: Instant) {
        let w = self.written.load(Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((now, w));
        while s.len() > 2 && now.duration_since(s[1].0) >= RATE_WINDOW {
            s.pop_front();
        }
    }

    /// Bytes per second written over the last [`RATE_WINDOW`] (0 before two samples).
    pub fn write_rate(&self) -> u64 {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match (s.front(), s.back()) {
            (Some(&(t0, w0)), Some(&(t1, w1))) if t1 > t0 => {
                ((w1 - w0) as f64 / t1.duration_since(t0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }
}

impl Totals {
    /// What changed from `earlier` to `self`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            written: self.written - earlier.written,
            read: self.read - earlier.read,
            created: self.created - earlier.created,
            removed: self.removed - earlier.removed,
            errors: self.errors - earlier.errors,
        }
    }

    /// True if nothing happened.
    pub fn is_idle(&self) -> bool {
        *self == Totals::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window() {
        let m = Meter::default();
        let t0 = Instant::now();
        m.sample_at(t0);
        assert_eq!(m.write_rate(), 0);
        for i in 1..=20u64 {
            m.wrote(1000);
            m.sample_at(t0 + Duration::from_secs(i));
        }
        assert_eq!(m.write_rate(), 1000);
        // Idle for a while: the rate falls to zero once the window has passed.
        for i in 21..=40u64 {
            m.sample_at(t0 + Duration::from_secs(i));
        }
        assert_eq!(m.write_rate(), 0);
        assert_eq!(m.totals().written, 20_000);
    }

    #[test]
    fn totals_difference() {
        let m = Meter::default();
        let a = m.totals();
        m.created();
        m.wrote(5);
        m.error();
        let d = m.totals().since(&a);
        assert_eq!(d.created, 1);
        assert_eq!(d.written, 5);
        assert_eq!(d.errors, 1);
        assert!(!d.is_idle());
        assert!(m.totals().since(&m.totals()).is_idle());
    }
}
