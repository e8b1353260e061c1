//! The duplicate request cache: a retransmitted non-idempotent call gets the reply of the
//! first transmission instead of being run again.
//!
//! A client that loses its connection (a timeout, a server restart of the network path)
//! sends its outstanding calls again on a new connection with the same xid. Run twice, a
//! REMOVE or RENAME that succeeded the first time answers NOENT, a CREATE GUARDED or MKDIR
//! EXIST: spurious errors for work that was done. Linux's server keeps the replies of
//! such calls for this; so does this cache, keyed by the client's address, the xid, the
//! program, version and procedure, and a hash of the arguments (so another client behind
//! the same address reusing an xid is not mistaken for a retransmission). It keeps the
//! last [`CAPACITY`] replies; a retransmission that arrives while the first transmission
//! is still running is dropped (the client sends it again and then gets the reply).

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::program::nfs3;
use super::rpc::CallHeader;

/// Replies kept.
pub const CAPACITY: usize = 4096;

/// True for the NFSv3 procedures whose retransmission must not run again.
pub fn is_non_idempotent(h: &CallHeader) -> bool {
    h.prog == super::program::NFS_PROGRAM
        && h.vers == super::program::NFS_V3
        && matches!(
            h.procedure,
            nfs3::SETATTR
                | nfs3::CREATE
                | nfs3::MKDIR
                | nfs3::SYMLINK
                | nfs3::MKNOD
                | nfs3::REMOVE
                | nfs3::RMDIR
                | nfs3::RENAME
                | nfs3::LINK
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    client: IpAddr,
    xid: u32,
    prog: u32,
    vers: u32,
    procedure: u32,
    args: u64,
}

#[derive(Debug)]
enum Entry {
    Running,
    Done(Arc<[u8]>),
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    order: VecDeque<Key>,
}

/// The cache.
#[derive(Debug, Default)]
pub struct Drc {
    inner: Mutex<Inner>,
}

/// What the cache says of a call.
#[derive(Debug)]
pub enum Seen {
    /// A first transmission: run it and hand the reply to the ticket.
    New(Ticket),
    /// A retransmission of a call still running: drop it.
    Running,
    /// A retransmission of a call already answered: send this reply again.
    Replay(Arc<[u8]>),
}

/// A first transmission being run; its reply is kept by [`Ticket::done`]. Dropped without
/// a reply (the call failed to produce one), the entry is forgotten.
#[derive(Debug)]
#[must_use = "hand the reply to `done`"]
pub struct Ticket {
    cache: Arc<Drc>,
    key: Key,
    finished: bool,
}

impl Drc {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks up the call of `client` with header `h` and arguments `args`.
    pub fn check(self: &Arc<Self>, client: IpAddr, h: &CallHeader, args: &[u8]) -> Seen {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        args.hash(&mut hasher);
        let key = Key {
            client,
            xid: h.xid,
            prog: h.prog,
            vers: h.vers,
            procedure: h.procedure,
            args: hasher.finish(),
        };
        let mut inner = self.inner();
        match inner.entries.get(&key) {
            Some(Entry::Running) => return Seen::Running,
            Some(Entry::Done(reply)) => return Seen::Replay(reply.clone()),
            None => {}
        }
        while inner.order.len() >= CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.entries.remove(&old);
            }
        }
        inner.entries.insert(key, Entry::Running);
        inner.order.push_back(key);
        Seen::New(Ticket {
            cache: self.clone(),
            key,
            finished: false,
        })
    }

    /// Replies kept (and calls running).
    pub fn len(&self) -> usize {
        self.inner().entries.len()
    }

    /// True if nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// Keeps `reply` as the answer to retransmissions.
    pub fn done(mut self, reply: &[u8]) {
        self.finished = true;
        let mut inner = self.cache.inner();
        if let Some(e) = inner.entries.get_mut(&self.key) {
            *e = Entry::Done(reply.into());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.cache.inner();
            inner.entries.remove(&self.key);
            inner.order.retain(|k| *k != self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs::rpc::Caller;

    fn header(xid: u32, procedure: u32) -> CallHeader {
        CallHeader {
            xid,
            prog: super::super::program::NFS_PROGRAM,
            vers: 3,
            procedure,
            caller: Caller::default(),
            args: 0,
        }
    }

    #[test]
    fn retransmissions_get_the_first_reply() {
        let c = Arc::new(Drc::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let h = header(7, nfs3::REMOVE);
        let Seen::New(t) = c.check(a, &h, b"args") else {
            panic!("first transmission")
        };
        assert!(matches!(c.check(a, &h, b"args"), Seen::Running));
        t.done(b"reply");
        match c.check(a, &h, b"args") {
            Seen::Replay(r) => assert_eq!(&*r, b"reply"),
            other => panic!("{other:?}"),
        }
        // Another client, other arguments, another procedure: not a retransmission.
        assert!(matches!(c.check(b, &h, b"args"), Seen::New(_)));
        assert!(matches!(c.check(a, &h, b"other"), Seen::New(_)));
        assert!(matches!(
            c.check(a, &header(7, nfs3::RENAME), b"args"),
            Seen::New(_)
        ));
        assert!(is_non_idempotent(&h));
        assert!(!is_non_idempotent(&header(1, nfs3::WRITE)));
        assert!(!is_non_idempotent(&header(1, nfs3::GETATTR)));
    }

    #[test]
    fn bounded_and_forgets_calls_that_gave_no_reply() {
        let c = Arc::new(Drc::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for xid in 0..(CAPACITY as u32 + 100) {
            if let Seen::New(t) = c.check(a, &header(xid, nfs3::CREATE), b"") {
                t.done(b"r");
            }
        }
        assert_eq!(c.len(), CAPACITY);
        let h = header(1 << 30, nfs3::MKDIR);
        let Seen::New(t) = c.check(a, &h, b"") else {
            panic!()
        };
        drop(t);
        assert!(matches!(c.check(a, &h, b""), Seen::New(_)));
    }
}
