//! ONC RPC messages (RFC 5531) as far as the gate needs them: the header of a call (to
//! pick the NFS and MOUNT procedures the appliance answers itself), reading XDR arguments,
//! and building an accepted reply.

use crate::framing::{HEADER, LAST_FRAGMENT};

/// Message type of a call.
const CALL: u32 = 0;
/// Message type of a reply.
const REPLY: u32 = 1;
/// reply_stat: the call was accepted.
const MSG_ACCEPTED: u32 = 0;
/// Largest credential or verifier body (RFC 5531).
const MAX_AUTH: usize = 400;

/// NFS program number.
pub const NFS_PROGRAM: u32 = 100003;
/// NFS version 3.
pub const NFS_V3: u32 = 3;
/// NFSPROC3_NULL.
pub const PROC_NULL: u32 = 0;
/// NFSPROC3_GETATTR.
pub const PROC_GETATTR: u32 = 1;
/// NFSPROC3_SETATTR.
pub const PROC_SETATTR: u32 = 2;
/// NFSPROC3_LOOKUP.
pub const PROC_LOOKUP: u32 = 3;
/// NFSPROC3_ACCESS.
pub const PROC_ACCESS: u32 = 4;
/// NFSPROC3_WRITE.
pub const PROC_WRITE: u32 = 7;
/// NFSPROC3_CREATE.
pub const PROC_CREATE: u32 = 8;
/// NFSPROC3_READDIR.
pub const PROC_READDIR: u32 = 16;
/// NFSPROC3_FSSTAT.
pub const PROC_FSSTAT: u32 = 18;
/// NFSPROC3_FSINFO.
pub const PROC_FSINFO: u32 = 19;
/// NFSPROC3_PATHCONF.
pub const PROC_PATHCONF: u32 = 20;
/// NFSPROC3_COMMIT.
pub const PROC_COMMIT: u32 = 21;
/// MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100005;
/// MOUNT version 3.
pub const MOUNT_V3: u32 = 3;

/// accept_stat of an accepted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AcceptStat {
    /// The procedure ran; results follow.
    Success = 0,
    /// The arguments could not be decoded.
    GarbageArgs = 4,
}

/// The header of an RPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallHeader {
    /// Transaction id.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub procedure: u32,
    /// Offset of the procedure's arguments in the message.
    pub args: usize,
}

impl CallHeader {
    /// True for the NFSv3 and MOUNT v3 procedures the appliance answers itself instead of
    /// `nfsserve`.
    pub fn answered_locally(&self) -> bool {
        match (self.prog, self.vers) {
            (NFS_PROGRAM, NFS_V3) => matches!(
                self.procedure,
                PROC_NULL
                    | PROC_GETATTR
                    | PROC_SETATTR
                    | PROC_LOOKUP
                    | PROC_ACCESS
                    | PROC_WRITE
                    | PROC_CREATE
                    | PROC_READDIR
                    | PROC_FSSTAT
                    | PROC_FSINFO
                    | PROC_PATHCONF
                    | PROC_COMMIT
            ),
            (MOUNT_PROGRAM, MOUNT_V3) => crate::mount::answers(self.procedure),
            _ => false,
        }
    }

    /// True for an NFSv3 call of `procedure`.
    pub fn is_nfs3(&self, procedure: u32) -> bool {
        self.prog == NFS_PROGRAM && self.vers == NFS_V3 && self.procedure == procedure
    }
}

/// Reads XDR items from a buffer.
#[derive(Debug)]
pub struct Xdr<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Xdr<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Xdr { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// Fixed-length opaque data of `n` bytes (a multiple of 4, such as a verifier).
    pub fn fixed(&mut self, n: usize) -> Option<&'a [u8]> {
        self.take(n)
    }

    /// A value of a fixed-size `nfsserve` XDR type (such as `sattr3` or `nfstime3`).
    /// Not for types holding variable-length data: `nfsserve` allocates whatever length
    /// the message announces before reading it (use [`Xdr::opaque`] for those).
    pub fn decode<T: nfsserve::xdr::XDR + Default>(&mut self) -> Option<T> {
        let mut c = std::io::Cursor::new(self.buf.get(self.pos..)?);
        let mut v = T::default();
        v.deserialize(&mut c).ok()?;
        self.pos += c.position() as usize;
        Some(v)
    }

    /// Variable-length opaque data of at most `max` bytes (length, bytes, padding).
    pub fn opaque(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return None;
        }
        let data = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Some(data)
    }
}

/// Parses the header of an RPC call message; `None` if it is not a well-formed call.
pub fn parse_call(msg: &[u8]) -> Option<CallHeader> {
    let mut x = Xdr::new(msg);
    let xid = x.u32()?;
    if x.u32()? != CALL || x.u32()? != 2 {
        return None;
    }
    let prog = x.u32()?;
    let vers = x.u32()?;
    let procedure = x.u32()?;
    for _ in 0..2 {
        let _flavor = x.u32()?;
        x.opaque(MAX_AUTH)?;
    }
    Some(CallHeader {
        xid,
        prog,
        vers,
        procedure,
        args: x.pos(),
    })
}

/// A reply record being built: record mark, accepted-reply header, then results.
#[derive(Debug)]
pub struct Reply(Vec<u8>);

impl Reply {
    /// Starts the reply to `xid` with `stat` (results are appended with [`Reply::put`]).
    pub fn accepted(xid: u32, stat: AcceptStat) -> Reply {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(&[0; HEADER]);
        for w in [xid, REPLY, MSG_ACCEPTED, 0, 0, stat as u32] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        Reply(v)
    }

    /// Appends an XDR-encoded value.
    pub fn put<T: nfsserve::xdr::XDR>(&mut self, value: &T) -> &mut Self {
        value
            .serialize(&mut self.0)
            .expect("encoding into memory cannot fail");
        self
    }

    /// Appends a 32-bit word.
    pub fn word(&mut self, w: u32) -> &mut Self {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }

    /// Appends fixed-length opaque bytes (a length multiple of 4, such as a verifier).
    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The finished record, ready for the socket.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - HEADER) as u32;
        self.0[..HEADER].copy_from_slice(&(LAST_FRAGMENT | len).to_be_bytes());
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(prog: u32, vers: u32, procedure: u32, cred: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [77u32, CALL, 2, prog, vers, procedure, 1, cred.len() as u32] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(cred);
        v.resize(v.len() + (4 - cred.len() % 4) % 4, 0);
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(b"ARGS");
        v
    }

    #[test]
    fn call_headers() {
        let m = call(NFS_PROGRAM, 3, PROC_WRITE, b"unix-cred");
        let h = parse_call(&m).unwrap();
        assert_eq!(h.xid, 77);
        assert!(h.is_nfs3(PROC_WRITE));
        assert!(!h.is_nfs3(PROC_COMMIT));
        assert!(h.answered_locally());
        let getattr = parse_call(&call(NFS_PROGRAM, 3, PROC_GETATTR, b"")).unwrap();
        assert!(getattr.answered_locally());
        let read = parse_call(&call(NFS_PROGRAM, 3, 6, b"")).unwrap();
        assert!(!read.answered_locally(), "READ goes to nfsserve");
        let nfs2 = parse_call(&call(NFS_PROGRAM, 2, PROC_GETATTR, b"")).unwrap();
        assert!(!nfs2.answered_locally());
        let mnt = parse_call(&call(MOUNT_PROGRAM, 3, 1, b"")).unwrap();
        assert!(mnt.answered_locally());
        let dump = parse_call(&call(MOUNT_PROGRAM, 3, 2, b"")).unwrap();
        assert!(!dump.answered_locally(), "MOUNT DUMP goes to nfsserve");
        let mount1 = parse_call(&call(MOUNT_PROGRAM, 1, 1, b"")).unwrap();
        assert!(!mount1.answered_locally());
        assert_eq!(&m[h.args..], b"ARGS");
        // Not a call, wrong RPC version, truncated, oversized credential.
        let mut reply = m.clone();
        reply[7] = 1;
        assert!(parse_call(&reply).is_none());
        let mut v1 = m.clone();
        v1[11] = 1;
        assert!(parse_call(&v1).is_none());
        assert!(parse_call(&m[..20]).is_none());
        assert!(parse_call(&call(NFS_PROGRAM, 3, 7, &[1u8; 401])).is_none());
    }

    #[test]
    fn xdr_reading() {
        let mut b = Vec::new();
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(b"abc\0");
        b.extend_from_slice(&9u64.to_be_bytes());
        let mut x = Xdr::new(&b);
        assert_eq!(x.opaque(8), Some(&b"abc"[..]));
        assert_eq!(x.u64(), Some(9));
        assert_eq!(x.u32(), None);
        assert_eq!(Xdr::new(&b).opaque(2), None, "longer than allowed");
        let mut x = Xdr::new(&b);
        assert_eq!(x.fixed(8), Some(&b[..8]));
        let t: nfsserve::nfs::nfstime3 = x.decode().unwrap();
        assert_eq!((t.seconds, t.nseconds, x.pos()), (0, 9, 16));
        assert!(
            x.decode::<nfsserve::nfs::nfstime3>().is_none(),
            "nothing left"
        );
    }

    #[test]
    fn replies_are_record_marked() {
        let mut r = Reply::accepted(5, AcceptStat::Success);
        r.word(0).fixed(&[1; 8]);
        let rec = r.finish();
        assert_eq!(&rec[..4], &(LAST_FRAGMENT | 36).to_be_bytes());
        assert_eq!(&rec[4..8], &5u32.to_be_bytes());
        assert_eq!(rec.len(), 40);
    }
}
