//! The bounded XDR reader every byte from a client goes through.
//!
//! `nfsserve`'s decoders size a `Vec` from a length the message announces before checking
//! that the bytes are there (a 44-byte call announcing a 1 GiB credential costs 1 GiB).
//! This reader never allocates: it hands out slices of the record already received, and
//! every variable-length item is checked against the protocol's limit and against the
//! bytes actually present before anything is copied. A failed read is `None`, which the
//! caller answers with GARBAGE_ARGS.
//!
//! The NFSv3 argument types (`sattr3`, `nfstime3`, handles, names, paths) are decoded here
//! into `nfsserve`'s type vocabulary, which the procedures then pass on and encode.

use nfsserve::nfs::{
    filename3, nfs_fh3, nfspath3, nfstime3, sattr3, set_atime, set_gid3, set_mode3, set_mtime,
    set_size3, set_uid3,
};

/// Largest file handle (NFS3_FHSIZE).
pub const MAX_HANDLE: usize = 64;
/// Longest name in a directory the protocol layer accepts (the store's own limit is the
/// same; longer names are refused as GARBAGE_ARGS before anything is allocated).
pub const MAX_NAME: usize = 255;
/// Longest path: symlink data and MOUNT paths (MNTPATHLEN).
pub const MAX_PATH: usize = 1024;

/// Reads XDR items from a received record.
#[derive(Debug, Clone)]
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

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
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

    /// An XDR boolean (0 or 1; anything else is malformed).
    pub fn bool(&mut self) -> Option<bool> {
        match self.u32()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// Fixed-length opaque data of `N` bytes (`N` a multiple of 4, such as a verifier).
    pub fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("N bytes"))
    }

    /// Variable-length opaque data of at most `max` bytes (length, bytes, zero padding).
    /// The length is checked against `max` and against the bytes present before anything
    /// else happens.
    pub fn opaque(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max || len > self.remaining() {
            return None;
        }
        let data = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Some(data)
    }

    /// A file handle (`nfs_fh3`, at most 64 bytes).
    pub fn handle(&mut self) -> Option<nfs_fh3> {
        Some(nfs_fh3 {
            data: self.opaque(MAX_HANDLE)?.to_vec(),
        })
    }

    /// A name in a directory (`filename3`, at most [`MAX_NAME`] bytes).
    pub fn name(&mut self) -> Option<filename3> {
        Some(self.opaque(MAX_NAME)?.into())
    }

    /// A path (`nfspath3`: symlink data, at most [`MAX_PATH`] bytes).
    pub fn path(&mut self) -> Option<nfspath3> {
        Some(self.opaque(MAX_PATH)?.into())
    }

    /// A directory and a name in it (`diropargs3`).
    pub fn dirop(&mut self) -> Option<(nfs_fh3, filename3)> {
        Some((self.handle()?, self.name()?))
    }

    /// A time (`nfstime3`).
    pub fn time(&mut self) -> Option<nfstime3> {
        Some(nfstime3 {
            seconds: self.u32()?,
            nseconds: self.u32()?,
        })
    }

    /// Attributes to set (`sattr3`): each field is a discriminated union.
    pub fn sattr(&mut self) -> Option<sattr3> {
        let mode = match self.bool()? {
            true => set_mode3::mode(self.u32()?),
            false => set_mode3::Void,
        };
        let uid = match self.bool()? {
            true => set_uid3::uid(self.u32()?),
            false => set_uid3::Void,
        };
        let gid = match self.bool()? {
            true => set_gid3::gid(self.u32()?),
            false => set_gid3::Void,
        };
        let size = match self.bool()? {
            true => set_size3::size(self.u64()?),
            false => set_size3::Void,
        };
        let atime = match self.u32()? {
            0 => set_atime::DONT_CHANGE,
            1 => set_atime::SET_TO_SERVER_TIME,
            2 => set_atime::SET_TO_CLIENT_TIME(self.time()?),
            _ => return None,
        };
        let mtime = match self.u32()? {
            0 => set_mtime::DONT_CHANGE,
            1 => set_mtime::SET_TO_SERVER_TIME,
            2 => set_mtime::SET_TO_CLIENT_TIME(self.time()?),
            _ => return None,
        };
        Some(sattr3 {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfsserve::xdr::XDR;

    fn encoded<T: XDR>(v: &T) -> Vec<u8> {
        let mut b = Vec::new();
        v.serialize(&mut b).unwrap();
        b
    }

    #[test]
    fn scalars_and_opaque() {
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
        assert_eq!(x.fixed::<8>(), Some(b[..8].try_into().unwrap()));
        assert_eq!(x.time().map(|t| (t.seconds, t.nseconds)), Some((0, 9)));
        assert!(x.time().is_none(), "nothing left");
        assert_eq!(Xdr::new(&2u32.to_be_bytes()).bool(), None);
    }

    #[test]
    fn announced_lengths_beyond_the_bytes_present_fail_without_allocating() {
        // A length of 4 GiB - 1 followed by nothing: refused from the length word alone.
        let b = u32::MAX.to_be_bytes();
        assert_eq!(Xdr::new(&b).opaque(usize::MAX), None);
        // Within the limit but more than what arrived.
        let mut b = 60u32.to_be_bytes().to_vec();
        b.extend_from_slice(&[7; 20]);
        assert!(Xdr::new(&b).handle().is_none());
        // Missing padding.
        let mut b = 3u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"abc");
        assert!(Xdr::new(&b).name().is_none());
    }

    #[test]
    fn protocol_limits() {
        let opaque = |n: usize| {
            let mut b = (n as u32).to_be_bytes().to_vec();
            b.resize(4 + n.div_ceil(4) * 4, b'a');
            b
        };
        assert!(Xdr::new(&opaque(64)).handle().is_some());
        assert!(Xdr::new(&opaque(65)).handle().is_none());
        assert!(Xdr::new(&opaque(255)).name().is_some());
        assert!(Xdr::new(&opaque(256)).name().is_none());
        assert!(Xdr::new(&opaque(1024)).path().is_some());
        assert!(Xdr::new(&opaque(1025)).path().is_none());
    }

    #[test]
    fn sattr3_round_trips_with_nfsserves_encoding() {
        let all = sattr3 {
            mode: set_mode3::mode(0o640),
            uid: set_uid3::uid(7),
            gid: set_gid3::gid(8),
            size: set_size3::size(1 << 40),
            atime: set_atime::SET_TO_SERVER_TIME,
            mtime: set_mtime::SET_TO_CLIENT_TIME(nfstime3 {
                seconds: 5,
                nseconds: 6,
            }),
        };
        for s in [all, sattr3::default()] {
            let b = encoded(&s);
            let mut x = Xdr::new(&b);
            let back = x.sattr().unwrap();
            assert_eq!(encoded(&back), b);
            assert_eq!(x.remaining(), 0);
        }
        let mut bad = encoded(&sattr3::default());
        bad[16 + 3] = 3; // atime discriminant 3 does not exist
        assert!(Xdr::new(&bad).sattr().is_none());
    }
}
