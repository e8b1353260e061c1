//! ONC RPC messages (RFC 5531): the header of a call, checked to the protocol's limits,
//! and every kind of reply the server sends.

use super::framing::{HEADER, LAST_FRAGMENT};
use super::xdr::Xdr;

/// Message type of a call.
const CALL: u32 = 0;
/// Message type of a reply.
const REPLY: u32 = 1;
/// The only RPC version there is.
const RPC_VERSION: u32 = 2;
/// reply_stat values.
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;
/// reject_stat values.
const RPC_MISMATCH: u32 = 0;
const AUTH_ERROR: u32 = 1;
/// auth_stat: the credential is malformed or of a flavor this server does not speak.
const AUTH_BADCRED: u32 = 1;

/// Largest credential or verifier body (RFC 5531).
pub const MAX_AUTH: usize = 400;
/// Longest AUTH_SYS machine name (RFC 5531, appendix A).
pub const MAX_MACHINE_NAME: usize = 255;
/// Most supplementary groups in an AUTH_SYS credential.
pub const MAX_GIDS: usize = 16;

/// auth_flavor values.
pub const AUTH_NONE: u32 = 0;
/// AUTH_SYS (AUTH_UNIX).
pub const AUTH_SYS: u32 = 1;

/// accept_stat of an accepted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AcceptStat {
    /// The procedure ran; results follow.
    Success = 0,
    /// The program is not served here.
    ProgUnavail = 1,
    /// The program is served, in other versions (the range follows).
    ProgMismatch = 2,
    /// The program has no such procedure.
    ProcUnavail = 3,
    /// The arguments could not be decoded.
    GarbageArgs = 4,
    /// The server failed (memory, an internal error).
    SystemErr = 5,
}

/// Who is calling, as far as AUTH_SYS says (AUTH_NONE: nobody in particular).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    /// User id, if the credential is AUTH_SYS.
    pub uid: Option<u32>,
    /// Primary group id, if the credential is AUTH_SYS.
    pub gid: Option<u32>,
}

/// The header of a call that passed every check.
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
    /// The credential.
    pub caller: Caller,
    /// Offset of the procedure's arguments in the message.
    pub args: usize,
}

/// Why a message is not a call this server will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a call (a reply, or too short to say): nothing can be answered.
    Ignore,
    /// A call whose header or arguments do not decode: GARBAGE_ARGS.
    Garbage(u32),
    /// An RPC version other than 2.
    RpcMismatch(u32),
    /// A malformed credential or verifier, or a flavor other than AUTH_NONE and AUTH_SYS.
    BadCredential(u32),
}

impl Refusal {
    /// The reply record this refusal sends, if any.
    pub fn reply(self) -> Option<Vec<u8>> {
        Some(match self {
            Refusal::Ignore => return None,
            Refusal::Garbage(xid) => Reply::accepted(xid, AcceptStat::GarbageArgs).finish(),
            Refusal::RpcMismatch(xid) => {
                Reply::denied(xid, &[RPC_MISMATCH, RPC_VERSION, RPC_VERSION])
            }
            Refusal::BadCredential(xid) => Reply::denied(xid, &[AUTH_ERROR, AUTH_BADCRED]),
        })
    }
}

/// Checks an AUTH_SYS credential body to the letter: stamp, machine name of at most 255
/// bytes, uid, gid, at most 16 groups, and nothing after them.
fn auth_sys(body: &[u8]) -> Option<Caller> {
    let mut x = Xdr::new(body);
    let _stamp = x.u32()?;
    x.opaque(MAX_MACHINE_NAME)?;
    let uid = x.u32()?;
    let gid = x.u32()?;
    let groups = x.u32()? as usize;
    if groups > MAX_GIDS || groups * 4 != x.remaining() {
        return None;
    }
    Some(Caller {
        uid: Some(uid),
        gid: Some(gid),
    })
}

/// Parses and checks the header of an RPC call message.
pub fn parse_call(msg: &[u8]) -> Result<CallHeader, Refusal> {
    let mut x = Xdr::new(msg);
    let xid = x.u32().ok_or(Refusal::Ignore)?;
    if x.u32().ok_or(Refusal::Ignore)? != CALL {
        return Err(Refusal::Ignore);
    }
    let garbage = Refusal::Garbage(xid);
    if x.u32().ok_or(garbage)? != RPC_VERSION {
        return Err(Refusal::RpcMismatch(xid));
    }
    let prog = x.u32().ok_or(garbage)?;
    let vers = x.u32().ok_or(garbage)?;
    let procedure = x.u32().ok_or(garbage)?;
    let bad = Refusal::BadCredential(xid);
    let flavor = x.u32().ok_or(garbage)?;
    let body = x.opaque(MAX_AUTH).ok_or(bad)?;
    let caller = match flavor {
        AUTH_NONE => Caller::default(),
        AUTH_SYS => auth_sys(body).ok_or(bad)?,
        _ => return Err(bad),
    };
    let _verifier_flavor = x.u32().ok_or(garbage)?;
    x.opaque(MAX_AUTH).ok_or(bad)?;
    Ok(CallHeader {
        xid,
        prog,
        vers,
        procedure,
        caller,
        args: x.pos(),
    })
}

/// A reply record being built: record mark, reply header, then results.
#[derive(Debug)]
pub struct Reply(Vec<u8>);

impl Reply {
    /// Starts an accepted reply to `xid` with `stat` (results follow with [`Reply::put`]).
    pub fn accepted(xid: u32, stat: AcceptStat) -> Reply {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(&[0; HEADER]);
        // Verifier: AUTH_NONE, empty.
        for w in [xid, REPLY, MSG_ACCEPTED, AUTH_NONE, 0, stat as u32] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        Reply(v)
    }

    /// PROG_MISMATCH: the program is served in versions `low..=high` only.
    pub fn prog_mismatch(xid: u32, low: u32, high: u32) -> Vec<u8> {
        let mut r = Reply::accepted(xid, AcceptStat::ProgMismatch);
        r.word(low).word(high);
        r.finish()
    }

    /// A denied reply (`rejected_reply` words follow the reply_stat).
    fn denied(xid: u32, words: &[u32]) -> Vec<u8> {
        let mut r = Reply(Vec::with_capacity(32));
        r.0.extend_from_slice(&[0; HEADER]);
        r.word(xid).word(REPLY).word(MSG_DENIED);
        for &w in words {
            r.word(w);
        }
        r.finish()
    }

    /// Reserves room for `n` more bytes of results.
    pub fn reserve(&mut self, n: usize) -> &mut Self {
        self.0.reserve(n);
        self
    }

    /// Appends a value in `nfsserve`'s XDR encoding.
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

    /// Appends a 64-bit word.
    pub fn hyper(&mut self, w: u64) -> &mut Self {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }

    /// Appends fixed-length opaque bytes (a length multiple of 4, such as a verifier).
    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// Appends variable-length opaque bytes (length, bytes, padding).
    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.word(b.len() as u32);
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len() + (4 - b.len() % 4) % 4, 0);
        self
    }

    /// Bytes of results so far (without the record mark and reply header).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if nothing has been written (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

    /// A call message with credential `flavor` and `cred`.
    fn call(rpcvers: u32, flavor: u32, cred: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [
            77u32,
            CALL,
            rpcvers,
            100003,
            3,
            7,
            flavor,
            cred.len() as u32,
        ] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(cred);
        v.resize(v.len() + (4 - cred.len() % 4) % 4, 0);
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(b"ARGS");
        v
    }

    fn sys_cred(machine: &[u8], groups: u32, extra_words: usize) -> Vec<u8> {
        let mut v = 1u32.to_be_bytes().to_vec();
        v.extend_from_slice(&(machine.len() as u32).to_be_bytes());
        v.extend_from_slice(machine);
        v.resize(v.len() + (4 - machine.len() % 4) % 4, 0);
        for w in [1000u32, 100, groups] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for g in 0..extra_words as u32 {
            v.extend_from_slice(&g.to_be_bytes());
        }
        v
    }

    #[test]
    fn well_formed_calls() {
        let m = call(2, AUTH_NONE, b"");
        let h = parse_call(&m).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.procedure), (77, 100003, 3, 7));
        assert_eq!(&m[h.args..], b"ARGS");
        assert_eq!(h.caller, Caller::default());
        let h = parse_call(&call(2, AUTH_SYS, &sys_cred(b"host", 2, 2))).unwrap();
        assert_eq!(h.caller.uid, Some(1000));
        assert_eq!(h.caller.gid, Some(100));
    }

    #[test]
    fn hostile_and_malformed_headers() {
        let bad = Refusal::BadCredential(77);
        // Credential lengths: over 400 bytes, and announcing far more than is there.
        assert_eq!(parse_call(&call(2, AUTH_NONE, &[0; 401])), Err(bad));
        let mut m = call(2, AUTH_NONE, b"");
        m[28..32].copy_from_slice(&(1u32 << 30).to_be_bytes());
        assert_eq!(parse_call(&m), Err(bad));
        // AUTH_SYS: machine name over 255, more than 16 groups, a group count of 64 Mi,
        // trailing bytes.
        assert_eq!(
            parse_call(&call(2, AUTH_SYS, &sys_cred(&[b'h'; 256], 0, 0))),
            Err(bad)
        );
        assert_eq!(
            parse_call(&call(2, AUTH_SYS, &sys_cred(b"h", 17, 17))),
            Err(bad)
        );
        assert_eq!(
            parse_call(&call(2, AUTH_SYS, &sys_cred(b"h", 64 << 20, 3))),
            Err(bad)
        );
        assert_eq!(
            parse_call(&call(2, AUTH_SYS, &sys_cred(b"h", 1, 2))),
            Err(bad)
        );
        // Other flavors (RPCSEC_GSS) are refused, not guessed at.
        assert_eq!(parse_call(&call(2, 6, b"gss!")), Err(bad));
        assert_eq!(
            parse_call(&call(1, AUTH_NONE, b"")),
            Err(Refusal::RpcMismatch(77))
        );
        let m = call(2, AUTH_NONE, b"");
        assert_eq!(parse_call(&m[..20]), Err(Refusal::Garbage(77)));
        assert_eq!(parse_call(&m[..3]), Err(Refusal::Ignore));
        let mut reply = m.clone();
        reply[7] = 1;
        assert_eq!(parse_call(&reply), Err(Refusal::Ignore));
    }

    fn words(r: &[u8]) -> Vec<u32> {
        r[HEADER..]
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn replies_are_record_marked() {
        let mut r = Reply::accepted(5, AcceptStat::Success);
        r.word(0).fixed(&[1; 8]).opaque(b"abcde");
        let rec = r.finish();
        assert_eq!(&rec[..4], &(LAST_FRAGMENT | 48).to_be_bytes());
        assert_eq!(rec.len(), 52);
        assert_eq!(words(&rec)[..6], [5, REPLY, MSG_ACCEPTED, 0, 0, 0]);
        assert_eq!(
            words(&Refusal::BadCredential(9).reply().unwrap()),
            [9, REPLY, MSG_DENIED, AUTH_ERROR, AUTH_BADCRED]
        );
        assert_eq!(
            words(&Refusal::RpcMismatch(9).reply().unwrap()),
            [9, REPLY, MSG_DENIED, RPC_MISMATCH, 2, 2]
        );
        assert_eq!(
            words(&Reply::prog_mismatch(3, 3, 3))[5..],
            [AcceptStat::ProgMismatch as u32, 3, 3]
        );
        assert!(Refusal::Ignore.reply().is_none());
    }
}
