//! CRC32-framed blobs: `magic(8) | len(u32 LE) | payload | crc32(u32 LE)`.
//!
//! Used for every small structure that must be recognised and checked without a key
//! (superblocks, seal records). The CRC catches torn writes and bit rot; authenticity
//! comes from elsewhere (AEAD, signatures).

/// Bytes a frame adds around its payload.
pub const OVERHEAD: usize = 8 + 4 + 4;

/// Why a frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The magic differs: not this kind of structure (or all zeros: never written).
    Magic,
    /// The length field points past the buffer.
    Length,
    /// The checksum does not match: torn or damaged.
    Crc,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Magic => "wrong magic number",
            FrameError::Length => "length field out of range",
            FrameError::Crc => "checksum mismatch",
        })
    }
}

/// Frames `payload` under `magic`.
pub fn encode(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a frame at the start of `buf` and returns its payload.
pub fn decode<'a>(magic: &[u8; 8], buf: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if buf.len() < OVERHEAD || &buf[..8] != magic {
        return Err(FrameError::Magic);
    }
    let len = u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize;
    let end = 12usize.checked_add(len).ok_or(FrameError::Length)?;
    if end + 4 > buf.len() {
        return Err(FrameError::Length);
    }
    let crc = u32::from_le_bytes(buf[end..end + 4].try_into().unwrap());
    if crc32fast::hash(&buf[..end]) != crc {
        return Err(FrameError::Crc);
    }
    Ok(&buf[12..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let f = encode(b"TESTMAGC", b"hello");
        assert_eq!(decode(b"TESTMAGC", &f).unwrap(), b"hello");
        assert_eq!(decode(b"OTHERMAG", &f), Err(FrameError::Magic));
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(decode(b"TESTMAGC", &g).is_err(), "flip at {i} undetected");
        }
        assert!(decode(b"TESTMAGC", &f[..f.len() - 1]).is_err());
        assert_eq!(decode(b"TESTMAGC", &[0u8; 64]), Err(FrameError::Magic));
    }
}
