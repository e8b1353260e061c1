//! Log throttling: a problem that repeats for every request (a full device, a locked
//! export, a refused client) is logged once per window, with a count of what was left out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-category log throttle.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Throttle {
    /// At most one message per category and `window`.
    pub fn new(window: Duration) -> Self {
        Throttle {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` if a message of `category` may be logged now (`suppressed` = how
    /// many were left out since the last one), `None` if it must be dropped.
    pub fn admit(&self, category: &'static str) -> Option<u64> {
        self.admit_at(category, Instant::now())
    }

    fn admit_at(&self, category: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(category) {
            Some((last, dropped)) if now.duration_since(*last) < self.window => {
                *dropped += 1;
                None
            }
            Some((last, dropped)) => {
                let n = *dropped;
                *last = now;
                *dropped = 0;
                Some(n)
            }
            None => {
                seen.insert(category, (now, 0));
                Some(0)
            }
        }
    }
}

/// Formats the "left out" suffix of a throttled message.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar messages suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_window_with_a_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit_at("nospc", t0), Some(0));
        assert_eq!(t.admit_at("nospc", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.admit_at("nospc", t0 + Duration::from_secs(2)), None);
        assert_eq!(t.admit_at("locked", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(t.admit_at("nospc", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(t.admit_at("nospc", t0 + Duration::from_secs(12)), None);
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(2), " (2 similar messages suppressed)");
    }
}
