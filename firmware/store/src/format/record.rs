//! Extent records: the unit in which file data lands on a device.
//!
//! ```text
//! 0  magic "ODTR"        4  version  5 flags(bit0 = zstd)  6 cipher  7 reserved
//! 8  file id u64         16 file offset u64                24 generation u64
//! 32 plain len u32       36 stored len u32 (ciphertext + tag)
//! 40 session u64         48 counter u64 (the nonce)
//! 56 crc32 u32 over bytes 0..56 and the ciphertext          60 reserved u32
//! 64 ciphertext
//! ```
//! Bytes 0..56 are the AEAD's associated data, so a record moved to another file, offset or
//! generation fails its tag. The CRC lets a keyless pass (and crash recovery) tell a whole
//! record from a torn or rotten one.

use crate::crypto::cipher::{Cipher, SessionKey, TAG_LEN};
use crate::format::tree_hash::CHUNK;

/// Size of the record header.
pub const HEADER_LEN: usize = 64;
/// Largest plaintext one record carries: one chunk (the write path never lets a record
/// cross a chunk boundary).
pub const MAX_PLAIN: usize = CHUNK as usize;
const MAGIC: &[u8; 4] = b"ODTR";
const VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 1;

/// The decoded header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// zstd-compressed before encryption.
    pub compressed: bool,
    /// AEAD cipher.
    pub cipher: Cipher,
    /// File the bytes belong to.
    pub file_id: u64,
    /// File offset of the first byte.
    pub offset: u64,
    /// Write generation (newer overrides older).
    pub generation: u64,
    /// Plaintext bytes.
    pub plain_len: u32,
    /// Ciphertext bytes after the header (tag included).
    pub stored_len: u32,
    /// Session of the appliance run that wrote it.
    pub session: u64,
    /// Nonce counter within the session.
    pub counter: u64,
    /// CRC32 of the header's other bytes and the ciphertext.
    pub crc: u32,
}

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Not a record header (wrong magic, version or field values).
    NotARecord(String),
    /// Header or ciphertext fails its CRC: torn or bit rot.
    Crc,
    /// The AEAD tag does not verify: wrong key, tampering, or the record is bound elsewhere.
    Auth,
    /// Decompression failed or gave the wrong length.
    Decompress(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::NotARecord(why) => write!(f, "not a record: {why}"),
            RecordError::Crc => f.write_str("checksum mismatch (torn write or bit rot)"),
            RecordError::Auth => f.write_str("authentication tag mismatch (tampered or misplaced)"),
            RecordError::Decompress(why) => write!(f, "decompression failed: {why}"),
        }
    }
}

impl Header {
    /// Total bytes of the record on the device.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.stored_len as usize
    }

    fn encode_aad(&self, out: &mut [u8; HEADER_LEN]) {
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = if self.compressed { FLAG_ZSTD } else { 0 };
        out[6] = self.cipher.code();
        out[7] = 0;
        out[8..16].copy_from_slice(&self.file_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.generation.to_le_bytes());
        out[32..36].copy_from_slice(&self.plain_len.to_le_bytes());
        out[36..40].copy_from_slice(&self.stored_len.to_le_bytes());
        out[40..48].copy_from_slice(&self.session.to_le_bytes());
        out[48..56].copy_from_slice(&self.counter.to_le_bytes());
        out[56..64].fill(0);
    }

    /// Parses a header (without checking the CRC, which needs the ciphertext).
    pub fn decode(b: &[u8]) -> Result<Header, RecordError> {
        if b.len() < HEADER_LEN {
            return Err(RecordError::NotARecord("short header".into()));
        }
        if &b[..4] != MAGIC {
            return Err(RecordError::NotARecord("wrong magic".into()));
        }
        if b[4] != VERSION {
            return Err(RecordError::NotARecord(format!("unknown version {}", b[4])));
        }
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let cipher = Cipher::from_code(b[6])
            .ok_or_else(|| RecordError::NotARecord(format!("unknown cipher {}", b[6])))?;
        let h = Header {
            compressed: b[5] & FLAG_ZSTD != 0,
            cipher,
            file_id: u64at(8),
            offset: u64at(16),
            generation: u64at(24),
            plain_len: u32at(32),
            stored_len: u32at(36),
            session: u64at(40),
            counter: u64at(48),
            crc: u32at(56),
        };
        if h.plain_len as usize > MAX_PLAIN || h.plain_len == 0 {
            return Err(RecordError::NotARecord(format!(
                "plain length {}",
                h.plain_len
            )));
        }
        if (h.stored_len as usize) < TAG_LEN || h.stored_len as usize > MAX_PLAIN + 1024 + TAG_LEN {
            return Err(RecordError::NotARecord(format!(
                "stored length {}",
                h.stored_len
            )));
        }
        if b[7] != 0 || b[60..64] != [0; 4] {
            return Err(RecordError::NotARecord(
                "reserved bytes are not zero".into(),
            ));
        }
        if b[5] & !FLAG_ZSTD != 0 {
            return Err(RecordError::NotARecord(format!(
                "unknown flags {:#x}",
                b[5]
            )));
        }
        Ok(h)
    }

    /// Checks the CRC over header and ciphertext (keyless).
    pub fn check_crc(&self, record: &[u8]) -> Result<(), RecordError> {
        if record.len() < self.total_len() {
            return Err(RecordError::Crc);
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&record[..56]);
        h.update(&record[HEADER_LEN..self.total_len()]);
        if h.finalize() == self.crc {
            Ok(())
        } else {
            Err(RecordError::Crc)
        }
    }
}

/// Where a record's bytes came from, for building it.
pub struct Binding {
    /// File the bytes belong to.
    pub file_id: u64,
    /// File offset of the first byte.
    pub offset: u64,
    /// Write generation.
    pub generation: u64,
    /// Session of this appliance run.
    pub session: u64,
    /// Nonce counter within the session.
    pub counter: u64,
}

/// zstd level for records, chosen by measurement (`zstd-levels` in `benches/`, on the non-zero
/// pieces of the `pack` corpus; docs/benchmarks.md): level 1 stores 0.612 of the input,
/// levels 2 and 3 no less (0.613) at 22–48 % lower speed, levels −1 / −3 are 20 % / 40 %
/// faster but store 5.6 % / 6.9 % more. zstd is about a quarter of the pack pipeline's CPU
/// time, so −1 would save some 5 % of CPU for 5.6 % more bytes to write and sync; on the
/// disk-bound development machine the smaller output wins.
pub const ZSTD_LEVEL: i32 = 1;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Records at least this long are probed before zstd runs on them (below it the whole
/// attempt costs little more than the probe).
const PROBE_MIN: usize = 128 << 10;
/// Stripes of plaintext the probe compresses, spread evenly over the record.
const PROBE_STRIPES: usize = 16;
/// Bytes per stripe.
const PROBE_STRIPE: usize = 2 << 10;

/// Whether zstd should try `plain`. Random or already compressed data (a large part of VM
/// disks) never shrinks, yet a failed zstd attempt on 1 MiB costs about as much as the AEAD
/// pass. So a long record is probed first: 16 stripes of 2 KiB spread over it are
/// compressed together, and unless they shrink by at least 1/64 (half the saving a record
/// must reach to be stored compressed) the record is stored raw without trying. Measured on
/// the pack corpus (docs/benchmarks.md, "zstd level"): no loss of ratio.
pub fn worth_compressing(plain: &[u8]) -> bool {
    if plain.len() < PROBE_MIN {
        return true;
    }
    let mut sample = [0u8; PROBE_STRIPES * PROBE_STRIPE];
    let step = (plain.len() - PROBE_STRIPE) / (PROBE_STRIPES - 1);
    for (i, s) in sample.chunks_exact_mut(PROBE_STRIPE).enumerate() {
        s.copy_from_slice(&plain[i * step..i * step + PROBE_STRIPE]);
    }
    let mut out = [0u8; PROBE_STRIPES * PROBE_STRIPE];
    let limit = sample.len() - sample.len() / 64;
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = c.get_or_insert_with(|| {
            zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd compressor")
        });
        // Err: the output did not fit in the sample's size, i.e. it did not shrink.
        matches!(c.compress_to_buffer(&sample[..], &mut out[..]), Ok(n) if n < limit)
    })
}

/// Compresses, encrypts and frames `plain` into a complete record (header + ciphertext).
pub fn build(key: &SessionKey, cipher: Cipher, b: &Binding, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    build_into(key, cipher, b, plain, &mut out);
    out
}

/// Like [`build`], into `out` (cleared first). The plaintext is copied once: compressed or
/// raw straight behind the header, then encrypted in place.
pub fn build_into(key: &SessionKey, cipher: Cipher, b: &Binding, plain: &[u8], out: &mut Vec<u8>) {
    assert!(!plain.is_empty() && plain.len() <= MAX_PLAIN);
    out.clear();
    out.reserve(HEADER_LEN + zstd::zstd_safe::compress_bound(plain.len()) + TAG_LEN);
    out.resize(HEADER_LEN, 0);
    // Compress; keep it only if it saves at least 1/32.
    let limit = plain.len() - plain.len() / 32;
    let compressed = worth_compressing(plain)
        && COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            let c = c.get_or_insert_with(|| {
                zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd compressor")
            });
            let mut behind_header = std::io::Cursor::new(&mut *out);
            behind_header.set_position(HEADER_LEN as u64);
            matches!(c.compress_to_buffer(plain, &mut behind_header), Ok(n) if n < limit)
        });
    if !compressed {
        out.truncate(HEADER_LEN);
        out.extend_from_slice(plain);
    }
    let body_len = out.len() - HEADER_LEN;
    let stored_len = (body_len + TAG_LEN) as u32;
    let h = Header {
        compressed,
        cipher,
        file_id: b.file_id,
        offset: b.offset,
        generation: b.generation,
        plain_len: plain.len() as u32,
        stored_len,
        session: b.session,
        counter: b.counter,
        crc: 0,
    };
    let mut hdr = [0u8; HEADER_LEN];
    h.encode_aad(&mut hdr);
    let tag = key.seal_detached(b.counter, &hdr[..56], &mut out[HEADER_LEN..]);
    out.extend_from_slice(&tag);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&hdr[..56]);
    crc.update(&out[HEADER_LEN..]);
    hdr[56..60].copy_from_slice(&crc.finalize().to_le_bytes());
    out[..HEADER_LEN].copy_from_slice(&hdr);
}

/// Checks and opens a record: CRC, tag (with its binding), decompression. Returns the header
/// and the plaintext.
pub fn open(key: &SessionKey, record: &[u8]) -> Result<(Header, Vec<u8>), RecordError> {
    let h = Header::decode(record)?;
    h.check_crc(record)?;
    let mut aad = [0u8; HEADER_LEN];
    h.encode_aad(&mut aad);
    let mut body = record[HEADER_LEN..h.total_len()].to_vec();
    key.open(h.counter, &aad[..56], &mut body)
        .map_err(|_| RecordError::Auth)?;
    let plain = if h.compressed {
        DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            let d = d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd"));
            d.decompress(&body, h.plain_len as usize)
                .map_err(|e| RecordError::Decompress(e.to_string()))
        })?
    } else {
        body
    };
    if plain.len() != h.plain_len as usize {
        return Err(RecordError::Decompress(format!(
            "{} bytes instead of {}",
            plain.len(),
            h.plain_len
        )));
    }
    Ok((h, plain))
}

/// Checks and opens a record like [`open`], without allocating: the ciphertext is
/// decrypted in place in `record` (which is clobbered) and the plaintext lands in `out`,
/// which must be exactly the plaintext length the caller expects.
pub fn open_into(
    key: &SessionKey,
    record: &mut [u8],
    out: &mut [u8],
) -> Result<Header, RecordError> {
    let h = Header::decode(record)?;
    h.check_crc(record)?;
    if h.plain_len as usize != out.len() {
        return Err(RecordError::Decompress(format!(
            "the record holds {} bytes, {} expected",
            h.plain_len,
            out.len()
        )));
    }
    let mut aad = [0u8; HEADER_LEN];
    h.encode_aad(&mut aad);
    let body = &mut record[HEADER_LEN..h.total_len()];
    let n = key
        .open_in_place(h.counter, &aad[..56], body)
        .map_err(|_| RecordError::Auth)?;
    let body = &body[..n];
    if h.compressed {
        let got = DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            let d = d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd"));
            d.decompress_to_buffer(body, out)
                .map_err(|e| RecordError::Decompress(e.to_string()))
        })?;
        if got != out.len() {
            return Err(RecordError::Decompress(format!(
                "{got} bytes instead of {}",
                h.plain_len
            )));
        }
    } else if body.len() == out.len() {
        out.copy_from_slice(body);
    } else {
        return Err(RecordError::Decompress(format!(
            "{} bytes instead of {}",
            body.len(),
            h.plain_len
        )));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cipher::Purpose;
    use odt_test_support::data::pattern;

    fn binding() -> Binding {
        Binding {
            file_id: 9,
            offset: 1 << 20,
            generation: 77,
            session: 5,
            counter: 3,
        }
    }

    #[test]
    fn build_open_compressible_and_random() {
        let key = SessionKey::derive(Cipher::Aes256Gcm, &[1; 32], 5, Purpose::Record);
        let text: Vec<u8> = b"log line 12345 ok\n"
            .iter()
            .cycle()
            .take(100_000)
            .copied()
            .collect();
        let r = build(&key, Cipher::Aes256Gcm, &binding(), &text);
        assert!(r.len() < text.len() / 4);
        let (h, p) = open(&key, &r).unwrap();
        assert!(h.compressed);
        assert_eq!(p, text);
        let mut rnd = vec![0u8; 65536];
        crate::crypto::keys::random_bytes(&mut rnd);
        let r = build(&key, Cipher::Aes256Gcm, &binding(), &rnd);
        let (h, p) = open(&key, &r).unwrap();
        assert!(!h.compressed);
        assert_eq!(p, rnd);
    }

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!(
                    "Nov 23 09:{:02}:{:02} node sshd[{}]: accepted key\n",
                    i % 60,
                    i % 57,
                    i
                )
                .as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    #[test]
    fn the_probe_skips_random_records_only() {
        // Random data: skipped. Short records are never probed.
        assert!(!worth_compressing(&pattern(1, 1 << 20)));
        assert!(!worth_compressing(&pattern(2, PROBE_MIN)));
        assert!(worth_compressing(&pattern(3, PROBE_MIN - 1)));
        // Text, and random data with a compressible 1/8 inside, are compressed.
        assert!(worth_compressing(&text(1 << 20)));
        let mut mixed = pattern(4, 1 << 20);
        mixed[512 << 10..640 << 10].copy_from_slice(&text(128 << 10));
        assert!(worth_compressing(&mixed));
        // Random blocks repeated (no order-0 redundancy, but LZ matches) are compressed.
        let block = pattern(5, 4096);
        let repeated: Vec<u8> = block.iter().cycle().take(1 << 20).copied().collect();
        assert!(worth_compressing(&repeated));
    }

    #[test]
    fn large_records_compressed_or_raw_round_trip() {
        let key = SessionKey::derive(Cipher::Aes256Gcm, &[3; 32], 5, Purpose::Record);
        let mut out = vec![0xAA; 10];
        for (plain, want_compressed) in [(text(1 << 20), true), (pattern(9, 1 << 20), false)] {
            build_into(&key, Cipher::Aes256Gcm, &binding(), &plain, &mut out);
            assert_eq!(out, build(&key, Cipher::Aes256Gcm, &binding(), &plain));
            let (h, p) = open(&key, &out).unwrap();
            assert_eq!(h.compressed, want_compressed);
            assert_eq!(h.total_len(), out.len());
            assert_eq!(p, plain);
        }
    }

    #[test]
    fn any_bit_flip_is_caught() {
        let key = SessionKey::derive(Cipher::ChaCha20Poly1305, &[1; 32], 5, Purpose::Record);
        let r = build(&key, Cipher::ChaCha20Poly1305, &binding(), b"hello world");
        for i in 0..r.len() * 8 {
            let mut x = r.clone();
            x[i / 8] ^= 1 << (i % 8);
            assert!(open(&key, &x).is_err(), "flip of bit {i} undetected");
        }
    }

    #[test]
    fn open_into_equals_open_and_catches_flips() {
        let key = SessionKey::derive(Cipher::Aes256Gcm, &[1; 32], 5, Purpose::Record);
        let text: Vec<u8> = b"log line 12345 ok\n"
            .iter()
            .cycle()
            .take(70_000)
            .copied()
            .collect();
        let mut rnd = vec![0u8; 4097];
        crate::crypto::keys::random_bytes(&mut rnd);
        for plain in [&text[..], &rnd[..]] {
            let r = build(&key, Cipher::Aes256Gcm, &binding(), plain);
            let (h0, p0) = open(&key, &r).unwrap();
            let mut out = vec![0u8; plain.len()];
            let h = open_into(&key, &mut r.clone(), &mut out).unwrap();
            assert_eq!((h, &out), (h0, &p0));
            // A wrong expected length is refused, not truncated or overrun.
            let mut short = vec![0u8; plain.len() - 1];
            assert!(matches!(
                open_into(&key, &mut r.clone(), &mut short),
                Err(RecordError::Decompress(_))
            ));
            for i in [0, 20, 60, HEADER_LEN + 3, r.len() - 1] {
                let mut x = r.clone();
                x[i] ^= 4;
                assert!(open_into(&key, &mut x, &mut out).is_err(), "flip at {i}");
            }
        }
    }

    #[test]
    fn rebinding_fails_auth() {
        let key = SessionKey::derive(Cipher::Aes256Gcm, &[1; 32], 5, Purpose::Record);
        let mut r = build(&key, Cipher::Aes256Gcm, &binding(), b"data of file 9");
        // Rewrite the file id and fix the CRC, as an attacker moving the record would.
        r[8..16].copy_from_slice(&10u64.to_le_bytes());
        let h = Header::decode(&r).unwrap();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&r[..56]);
        crc.update(&r[HEADER_LEN..h.total_len()]);
        r[56..60].copy_from_slice(&crc.finalize().to_le_bytes());
        assert_eq!(open(&key, &r).unwrap_err(), RecordError::Auth);
    }
}
