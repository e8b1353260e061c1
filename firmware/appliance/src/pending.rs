//! Writes acknowledged as UNSTABLE whose store write is still running.
//!
//! The appliance answers an UNSTABLE WRITE once it has checked it and runs the store write
//! (durable when it returns) in the background. This tracker keeps what clients may rely
//! on meanwhile:
//! - operations that read a file's state (GETATTR, READ, SETATTR, COMMIT) first *settle*
//!   it: they wait for every write to that file acknowledged before they started, so a
//!   client always reads what it wrote;
//! - a write that fails in the background leaves its status on the file, reported by the
//!   next WRITE or COMMIT of that file (as NFS defers errors of unstable writes to COMMIT);
//! - the size a client sees in a WRITE reply includes its acknowledged writes;
//! - writes to overlapping ranges of a file reach the store in the order they arrived
//!   (a client may rewrite a range as soon as its first write is acknowledged).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use nfsserve::nfs::nfsstat3;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct FileWrites {
    next_seq: u64,
    /// Running writes by arrival: byte range.
    running: BTreeMap<u64, (u64, u64)>,
    max_end: u64,
    error: Option<nfsstat3>,
}

/// One acknowledged write in the background.
#[derive(Debug)]
#[must_use = "finish the ticket when the store write returns"]
pub struct Ticket {
    id: u64,
    seq: u64,
    /// The largest end offset of the file's acknowledged writes, this one included.
    pub max_end: u64,
}

/// The tracker.
#[derive(Debug, Default)]
pub struct Pending {
    files: Mutex<HashMap<u64, FileWrites>>,
    done: Notify,
}

impl Pending {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, FileWrites>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a write of bytes `start..end` of file `id`.
    pub fn begin(&self, id: u64, start: u64, end: u64) -> Ticket {
        let mut files = self.files();
        let f = files.entry(id).or_default();
        let seq = f.next_seq;
        f.next_seq += 1;
        f.running.insert(seq, (start, end));
        f.max_end = f.max_end.max(end);
        Ticket {
            id,
            seq,
            max_end: f.max_end,
        }
    }

    /// Waits until the earlier writes of the ticket's file that overlap its range are done.
    pub async fn wait_turn(&self, t: &Ticket) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let clear = match self.files().get(&t.id) {
                None => true,
                Some(f) => {
                    let (s, e) = f.running.get(&t.seq).copied().unwrap_or((0, 0));
                    !f.running
                        .range(..t.seq)
                        .any(|(_, &(s2, e2))| s2 < e && s < e2)
                }
            };
            if clear {
                return;
            }
            notified.await;
        }
    }

    /// Marks a write done; a failure is kept for the next WRITE or COMMIT of the file.
    pub fn finish(&self, t: Ticket, failed: Option<nfsstat3>) {
        let mut files = self.files();
        if let Some(f) = files.get_mut(&t.id) {
            f.running.remove(&t.seq);
            if f.error.is_none() {
                f.error = failed;
            }
            if f.running.is_empty() && f.error.is_none() {
                files.remove(&t.id);
            }
        }
        drop(files);
        self.done.notify_waiters();
    }

    /// The failure a background write of `id` left, if any (reported once).
    pub fn take_error(&self, id: u64) -> Option<nfsstat3> {
        let mut files = self.files();
        let f = files.get_mut(&id)?;
        let e = f.error.take();
        if f.running.is_empty() {
            files.remove(&id);
        }
        e
    }

    /// True if writes to file `id` acknowledged earlier are still running.
    pub fn is_running(&self, id: u64) -> bool {
        self.files().get(&id).is_some_and(|f| !f.running.is_empty())
    }

    /// Waits until every write of `id` acknowledged before this call has finished.
    pub async fn settle(&self, id: u64) {
        let target = match self.files().get(&id) {
            Some(f) if !f.running.is_empty() => f.next_seq,
            _ => return,
        };
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let settled = match self.files().get(&id) {
                None => true,
                Some(f) => f.running.keys().next().is_none_or(|&s| s >= target),
            };
            if settled {
                return;
            }
            notified.await;
        }
    }

    /// Waits until no write is running at all (shutdown).
    pub async fn drain(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.files().values().all(|f| f.running.is_empty()) {
                return;
            }
            notified.await;
        }
    }

    /// Writes running now (for tests and logs).
    pub fn running(&self) -> usize {
        self.files().values().map(|f| f.running.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn settle_waits_for_earlier_writes_only() {
        let p = Arc::new(Pending::default());
        let a = p.begin(1, 0, 100);
        assert_eq!(a.max_end, 100);
        let b = p.begin(1, 0, 50);
        assert_eq!(b.max_end, 100, "the size hint never shrinks");
        // Nothing pending for file 2: settles at once.
        tokio::time::timeout(Duration::from_millis(100), p.settle(2))
            .await
            .unwrap();

        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.settle(1).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A write that starts after the waiter does not hold it up.
        let later = p.begin(1, 0, 10);
        p.finish(a, None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one earlier write still runs");
        p.finish(b, None);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.running(), 1);
        p.finish(later, None);
        assert_eq!(p.running(), 0);
        tokio::time::timeout(Duration::from_millis(100), p.drain())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn failures_are_reported_once_to_the_next_write_or_commit() {
        let p = Pending::default();
        let t = p.begin(3, 0, 10);
        let u = p.begin(3, 10, 20);
        p.finish(t, Some(nfsstat3::NFS3ERR_NOSPC));
        p.finish(u, Some(nfsstat3::NFS3ERR_IO));
        assert_eq!(
            p.take_error(3).map(|s| s as u32),
            Some(nfsstat3::NFS3ERR_NOSPC as u32)
        );
        assert!(p.take_error(3).is_none());
        assert!(p.take_error(4).is_none());
    }

    #[tokio::test]
    async fn overlapping_writes_take_turns_in_arrival_order() {
        let p = Arc::new(Pending::default());
        let first = p.begin(1, 0, 100);
        let disjoint = p.begin(1, 100, 200);
        let overlap = p.begin(1, 50, 150);
        let quick = Duration::from_millis(100);
        tokio::time::timeout(quick, p.wait_turn(&first))
            .await
            .unwrap();
        tokio::time::timeout(quick, p.wait_turn(&disjoint))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(quick, p.wait_turn(&overlap))
                .await
                .is_err()
        );
        p.finish(first, None);
        assert!(
            tokio::time::timeout(quick, p.wait_turn(&overlap))
                .await
                .is_err(),
            "the disjoint earlier write overlaps too (100..200 vs 50..150)"
        );
        p.finish(disjoint, None);
        tokio::time::timeout(quick, p.wait_turn(&overlap))
            .await
            .unwrap();
        p.finish(overlap, None);
    }
}
