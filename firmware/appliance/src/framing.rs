//! RPC record marking on TCP (RFC 5531 §11): a record is one or more fragments, each a
//! 4-byte big-endian header (top bit: last fragment; low 31 bits: length) and its bytes.
//!
//! The gate reads client records with a size limit *before* allocating: `nfsserve` itself
//! trusts the header and would allocate up to 2 GiB per fragment (and more per record).

use tokio::io::{AsyncRead, AsyncReadExt};

/// Top bit of a fragment header: this fragment ends the record.
pub const LAST_FRAGMENT: u32 = 1 << 31;
/// Bytes of a fragment header.
pub const HEADER: usize = 4;

/// Reading a record failed.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The record would exceed the limit; nothing beyond the header was read.
    #[error("request record of at least {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes the record header announced (at least).
        size: u64,
        /// Bytes allowed.
        limit: usize,
    },
    /// A record without any bytes (not an RPC message).
    #[error("empty request record")]
    Empty,
    /// The connection failed or ended inside a record.
    #[error("reading a request record: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits a fragment header into (last fragment?, length).
pub fn split_header(h: u32) -> (bool, usize) {
    (h & LAST_FRAGMENT != 0, (h & !LAST_FRAGMENT) as usize)
}

/// Reads the next fragment header, or `None` on a clean end of stream before it.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<u32>> {
    let mut b = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut b[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(Some(u32::from_be_bytes(b)))
}

/// Reads one record whose first fragment header was `first` into `buf`, re-framed as a
/// single last fragment: `buf` = header (4 bytes) + payload. At most `limit` payload bytes
/// are ever reserved, and only bytes received are written: an oversized record fails
/// before its bytes are read.
pub async fn read_record<R: AsyncRead + Unpin>(
    r: &mut R,
    first: u32,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<(), FramingError> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    let mut header = first;
    loop {
        let (last, len) = split_header(header);
        let have = buf.len() - HEADER;
        if have + len > limit {
            return Err(FramingError::TooLarge {
                size: (have + len) as u64,
                limit,
            });
        }
        // Reserve, but write only what arrives: the pages of a large (mmap'd) buffer become
        // resident as the client actually sends bytes, not when a header claims them.
        buf.reserve_exact(len);
        let mut rest = r.take(len as u64);
        let mut got = 0;
        while got < len {
            let n = rest.read_buf(buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            got += n;
        }
        if last {
            break;
        }
        header = read_header(r)
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    }
    let payload = buf.len() - HEADER;
    if payload == 0 {
        return Err(FramingError::Empty);
    }
    let h = LAST_FRAGMENT | payload as u32;
    buf[..HEADER].copy_from_slice(&h.to_be_bytes());
    Ok(())
}

/// The transaction id of an RPC message (its first 4 bytes), if it has that many.
pub fn xid(payload: &[u8]) -> Option<u32> {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(last: bool, body: &[u8]) -> Vec<u8> {
        let mut h = body.len() as u32;
        if last {
            h |= LAST_FRAGMENT;
        }
        let mut v = h.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    async fn read_one(wire: Vec<u8>, limit: usize) -> Result<Vec<u8>, FramingError> {
        let mut r = wire.as_slice();
        let first = read_header(&mut r).await?.unwrap();
        let mut buf = Vec::new();
        read_record(&mut r, first, &mut buf, limit).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn fragments_are_joined_into_one_last_fragment() {
        let mut wire = frag(false, b"abcd");
        wire.extend(frag(false, b"ef"));
        wire.extend(frag(true, b"gh"));
        let buf = read_one(wire, 100).await.unwrap();
        assert_eq!(&buf[..4], &(LAST_FRAGMENT | 8).to_be_bytes());
        assert_eq!(&buf[4..], b"abcdefgh");
        assert_eq!(xid(&buf[4..]), Some(u32::from_be_bytes(*b"abcd")));
    }

    #[tokio::test]
    async fn oversized_headers_fail_before_any_allocation() {
        // A 2 GiB claim with no bytes behind it: refused from the header alone.
        let wire = (LAST_FRAGMENT | 0x7fff_ffff).to_be_bytes().to_vec();
        match read_one(wire, 1 << 20).await {
            Err(FramingError::TooLarge { size, limit }) => {
                assert_eq!(size, 0x7fff_ffff);
                assert_eq!(limit, 1 << 20);
            }
            other => panic!("{other:?}"),
        }
        // Many fragments that add up past the limit are refused too.
        let mut wire = Vec::new();
        for _ in 0..5 {
            wire.extend(frag(false, &[0u8; 30]));
        }
        wire.extend(frag(true, b"x"));
        assert!(matches!(
            read_one(wire, 100).await,
            Err(FramingError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn truncated_and_empty_records_fail() {
        let mut wire = frag(true, b"abcdef");
        wire.truncate(7);
        assert!(matches!(
            read_one(wire, 100).await,
            Err(FramingError::Io(_))
        ));
        assert!(matches!(
            read_one(frag(true, b""), 100).await,
            Err(FramingError::Empty)
        ));
        let mut r: &[u8] = &[];
        assert!(read_header(&mut r).await.unwrap().is_none());
        let mut r: &[u8] = &[0, 0];
        assert!(read_header(&mut r).await.is_err());
    }
}
