//! Raw ONC RPC calls for the tests that speak to the server below any client library:
//! hostile shapes, replays, and reading replies off a socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Top bit of a record mark: the last fragment.
pub const LAST_FRAGMENT: u32 = 1 << 31;
/// NFS program number.
pub const NFS_PROGRAM: u32 = 100003;
/// MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100005;

/// XDR items appended one by one.
#[derive(Debug, Default, Clone)]
pub struct Xdr(pub Vec<u8>);

impl Xdr {
    /// Nothing yet.
    pub fn new() -> Xdr {
        Xdr::default()
    }
    /// A 32-bit word.
    pub fn u32(mut self, w: u32) -> Xdr {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }
    /// A 64-bit word.
    pub fn u64(mut self, w: u64) -> Xdr {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }
    /// Variable-length opaque data (length, bytes, padding).
    pub fn opaque(mut self, b: &[u8]) -> Xdr {
        self = self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len() + (4 - b.len() % 4) % 4, 0);
        self
    }
    /// Raw bytes.
    pub fn raw(mut self, b: &[u8]) -> Xdr {
        self.0.extend_from_slice(b);
        self
    }
}

/// A call message of `program` version 3 with AUTH_NONE, then `args`.
pub fn call(xid: u32, program: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
    let mut v = Xdr::new();
    for w in [xid, 0, 2, program, 3, procedure, 0, 0, 0, 0] {
        v = v.u32(w);
    }
    v.raw(args).0
}

/// `msg` as one record (record mark + message).
pub fn record(msg: &[u8]) -> Vec<u8> {
    let mut v = (LAST_FRAGMENT | msg.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

/// Sends `msg` as one record and reads one reply record (its message), or `None` if the
/// server closed the connection or sent nothing within `limit`.
pub fn exchange(s: &mut TcpStream, msg: &[u8], limit: Duration) -> Option<Vec<u8>> {
    s.write_all(&record(msg)).ok()?;
    read_reply(s, limit)
}

/// Reads one reply record's message within `limit`.
pub fn read_reply(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(limit)).ok()?;
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let len = (u32::from_be_bytes(h) & !LAST_FRAGMENT) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// The 32-bit word at byte `at` of a reply message.
pub fn word(msg: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(msg[at..at + 4].try_into().expect("4 bytes"))
}

/// (reply_stat, accept_stat or reject_stat) of a reply message.
pub fn stats(msg: &[u8]) -> (u32, u32) {
    let reply_stat = word(msg, 8);
    if reply_stat == 0 {
        (0, word(msg, 20))
    } else {
        (reply_stat, word(msg, 12))
    }
}

/// True if the server closes (or resets) the connection within `limit`.
pub fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}
