//! ONC RPC calls as NFS clients send them (RFC 5531, with the record marking of RPC over
//! TCP), for tests that talk to the appliance's NFS and MOUNT services byte by byte.
//!
//! ```
//! use odt_test_support::rpc::{Call, Xdr, NFS_PROGRAM};
//! // NFSv3 GETATTR (procedure 1) of an 8-byte handle, from uid 1000.
//! let args = Xdr::new().opaque(b"handle!!").into_bytes();
//! let record = Call::new(7, NFS_PROGRAM, 3, 1).unix(1000, 1000).args(&args).record();
//! assert_eq!(&record[4..8], &7u32.to_be_bytes());
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nfsserve::nfs::{nfs_fh3, sattr3};
use nfsserve::xdr::XDR;

/// The NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// The MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The bit of a record mark that says "last fragment".
pub const LAST_FRAGMENT: u32 = 1 << 31;
/// `msg_type` of a call.
const CALL: u32 = 0;
/// The RPC version every call carries.
const RPC_VERSION: u32 = 2;
/// Credential flavors.
const AUTH_NONE: u32 = 0;
const AUTH_UNIX: u32 = 1;

/// The 4-byte record mark in front of a fragment of `len` bytes.
pub fn record_mark(len: u32, last: bool) -> [u8; 4] {
    (if last { LAST_FRAGMENT | len } else { len }).to_be_bytes()
}

/// XDR encoding of call arguments (big-endian words, opaque data padded to 4 bytes).
#[derive(Debug, Clone, Default)]
pub struct Xdr(pub Vec<u8>);

impl Xdr {
    /// Nothing encoded yet.
    pub fn new() -> Xdr {
        Xdr::default()
    }

    /// An unsigned 32-bit word.
    pub fn u32(mut self, v: u32) -> Xdr {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 64-bit hyper.
    pub fn u64(mut self, v: u64) -> Xdr {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(self, v: bool) -> Xdr {
        self.u32(v as u32)
    }

    /// Variable-length opaque data (also a `string` or a file handle): length, bytes,
    /// padding.
    pub fn opaque(self, b: &[u8]) -> Xdr {
        self.u32(b.len() as u32).fixed(b)
    }

    /// Fixed-length opaque data: the bytes and their padding.
    pub fn fixed(mut self, b: &[u8]) -> Xdr {
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// Bytes as they are (no length, no padding): for malformed calls.
    pub fn raw(mut self, b: &[u8]) -> Xdr {
        self.0.extend_from_slice(b);
        self
    }

    /// A string (encoded as opaque data).
    pub fn text(self, s: &str) -> Xdr {
        self.opaque(s.as_bytes())
    }

    /// An NFSv3 file handle, as `nfsserve` encodes it.
    pub fn fh(self, h: &nfs_fh3) -> Xdr {
        self.encoded(h)
    }

    /// NFSv3 attributes to set (`sattr3`), as `nfsserve` encodes them.
    pub fn sattr(self, s: &sattr3) -> Xdr {
        self.encoded(s)
    }

    fn encoded(mut self, v: &impl XDR) -> Xdr {
        v.serialize(&mut self.0)
            .expect("encoding into a Vec cannot fail");
        self
    }

    /// The bytes encoded so far.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Who a call says it is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cred {
    /// `AUTH_NONE` (what MOUNT calls and tests that do not care send).
    None,
    /// `AUTH_UNIX` (`AUTH_SYS`), as Linux and libnfs send.
    Unix {
        /// Arbitrary id the client picks.
        stamp: u32,
        /// The client's host name.
        machine: String,
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
        /// More groups (at most 16).
        gids: Vec<u32>,
    },
}

/// One RPC call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Transaction id, echoed by the reply.
    pub xid: u32,
    /// Program (`NFS_PROGRAM`, `MOUNT_PROGRAM`, ...).
    pub program: u32,
    /// Program version (3 for NFSv3 and MOUNT v3).
    pub version: u32,
    /// Procedure number.
    pub procedure: u32,
    /// The credential (the verifier is always `AUTH_NONE`).
    pub cred: Cred,
    /// XDR-encoded arguments.
    pub args: Vec<u8>,
}

impl Call {
    /// A call with `AUTH_NONE` credentials and no arguments.
    pub fn new(xid: u32, program: u32, version: u32, procedure: u32) -> Call {
        Call {
            xid,
            program,
            version,
            procedure,
            cred: Cred::None,
            args: Vec::new(),
        }
    }

    /// An NFSv3 call of `procedure`.
    pub fn nfs3(xid: u32, procedure: u32) -> Call {
        Call::new(xid, NFS_PROGRAM, 3, procedure)
    }

    /// A MOUNT v3 call of `procedure`.
    pub fn mount3(xid: u32, procedure: u32) -> Call {
        Call::new(xid, MOUNT_PROGRAM, 3, procedure)
    }

    /// With `AUTH_UNIX` credentials for `uid` and `gid` from host `test`.
    pub fn unix(mut self, uid: u32, gid: u32) -> Call {
        self.cred = Cred::Unix {
            stamp: 0,
            machine: "test".into(),
            uid,
            gid,
            gids: vec![gid],
        };
        self
    }

    /// With these XDR-encoded arguments.
    pub fn args(mut self, args: &[u8]) -> Call {
        self.args = args.to_vec();
        self
    }

    /// The call message (what follows the record mark).
    pub fn message(&self) -> Vec<u8> {
        let cred = match &self.cred {
            Cred::None => Xdr::new().u32(AUTH_NONE).u32(0),
            Cred::Unix {
                stamp,
                machine,
                uid,
                gid,
                gids,
            } => {
                let mut body = Xdr::new()
                    .u32(*stamp)
                    .opaque(machine.as_bytes())
                    .u32(*uid)
                    .u32(*gid)
                    .u32(gids.len() as u32);
                for g in gids {
                    body = body.u32(*g);
                }
                Xdr::new().u32(AUTH_UNIX).opaque(&body.into_bytes())
            }
        };
        let mut m = Xdr::new()
            .u32(self.xid)
            .u32(CALL)
            .u32(RPC_VERSION)
            .u32(self.program)
            .u32(self.version)
            .u32(self.procedure)
            .into_bytes();
        m.extend_from_slice(&cred.into_bytes());
        m.extend_from_slice(&Xdr::new().u32(AUTH_NONE).u32(0).into_bytes());
        m.extend_from_slice(&self.args);
        m
    }

    /// The call as one record (record mark, then the message), ready for the socket.
    pub fn record(&self) -> Vec<u8> {
        let m = self.message();
        let mut r = record_mark(m.len() as u32, true).to_vec();
        r.extend_from_slice(&m);
        r
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn a_call_is_laid_out_as_rfc_5531_says() {
        let c = Call::nfs3(9, 1).args(&[0, 0, 0, 1]);
        assert_eq!(
            words(&c.message()),
            vec![9, 0, 2, NFS_PROGRAM, 3, 1, 0, 0, 0, 0, 1]
        );
        let r = c.record();
        assert_eq!(r[..4], (LAST_FRAGMENT | 44).to_be_bytes());
        assert_eq!(r[4..], c.message()[..]);
        // AUTH_UNIX: flavor, body length, stamp, "test" (4 bytes, no padding), uid, gid,
        // one group.
        let u = Call::mount3(1, 1).unix(1000, 100).message();
        assert_eq!(
            words(&u[24..60]),
            vec![
                AUTH_UNIX,
                28,
                0,
                4,
                u32::from_be_bytes(*b"test"),
                1000,
                100,
                1,
                100
            ]
        );
        assert_eq!(words(&u[60..]), vec![AUTH_NONE, 0]);
    }

    #[test]
    fn opaque_data_is_padded() {
        let x = Xdr::new().opaque(b"abcde").bool(true).u64(2).into_bytes();
        assert_eq!(x.len(), 4 + 8 + 4 + 8);
        assert_eq!(&x[4..12], b"abcde\0\0\0");
        assert_eq!(record_mark(5, false), [0, 0, 0, 5]);
    }
}
