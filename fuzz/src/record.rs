//! Extent records: `record::Header::decode`, `Header::check_crc`, `record::open`.
//!
//! Keys: `SessionKey::derive(cipher, &[0; 32], 1, Purpose::Record)` for both ciphers.
//! Modes (first byte):
//! - raw: the bytes as a record. No panic; a header that decodes accounts for every one of
//!   its 64 bytes (laying it out again from the decoded fields gives the same bytes, so no
//!   bit escapes both the checks and the AEAD's associated data); `open` agrees with
//!   `check_crc` (a CRC failure is `Crc`, never `NotARecord`), and what opens has the header
//!   `decode` gave and `plain_len` bytes.
//! - mutated: a record made by `record::build` from fuzzer-chosen binding and plaintext
//!   (compressible or not), damaged, its CRC optionally fixed: `open` must fail unless the
//!   damage left the record's bytes as they were (bytes appended after it are not part of
//!   it), and then it must give the original header and plaintext.
//! - authentic: fuzzer-chosen header fields and body, sealed with the right key and a right
//!   CRC (the body optionally a real zstd frame, damaged before sealing): hostile content
//!   behind a valid tag. `open` may only answer `Ok` (with `plain_len` bytes; an
//!   uncompressed record gives its body), `Decompress`, or `NotARecord` for a header that
//!   breaks the header rules; never `Crc`/`Auth`, never a panic.

use libfuzzer_sys::arbitrary::Unstructured;
use odt_store::crypto::cipher::{Cipher, Purpose, TAG_LEN};
use odt_store::format::record::{self, Binding, HEADER_LEN, Header, MAX_PLAIN, RecordError};

use crate::util::{cipher, damage, fix_crc, key};

/// The record header laid out from its fields (as `docs/format.md` and the module doc of
/// `record.rs` describe it), CRC included.
pub fn layout(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..4].copy_from_slice(b"ODTR");
    b[4] = 1;
    b[5] = h.compressed as u8;
    b[6] = h.cipher.code();
    b[8..16].copy_from_slice(&h.file_id.to_le_bytes());
    b[16..24].copy_from_slice(&h.offset.to_le_bytes());
    b[24..32].copy_from_slice(&h.generation.to_le_bytes());
    b[32..36].copy_from_slice(&h.plain_len.to_le_bytes());
    b[36..40].copy_from_slice(&h.stored_len.to_le_bytes());
    b[40..48].copy_from_slice(&h.session.to_le_bytes());
    b[48..56].copy_from_slice(&h.counter.to_le_bytes());
    b[56..60].copy_from_slice(&h.crc.to_le_bytes());
    b
}

fn fix_record_crc(b: &mut [u8]) {
    if let Some(stored) = crate::util::u32_at(b, 36) {
        fix_crc(b, 56, HEADER_LEN, stored as usize);
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        0 => raw(u.take_rest()),
        1 => mutated(&mut u),
        _ => authentic(&mut u),
    }
}

fn raw(b: &[u8]) {
    let Ok(h) = Header::decode(b) else {
        return;
    };
    assert_eq!(
        layout(&h)[..],
        b[..HEADER_LEN],
        "Header::decode ignored some header bits"
    );
    assert_eq!(h.total_len(), HEADER_LEN + h.stored_len as usize);
    let crc = h.check_crc(b);
    if b.len() < h.total_len() {
        assert!(crc.is_err(), "CRC passes on a short record");
    }
    for c in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        match record::open(key(c, Purpose::Record), b) {
            Ok((h2, plain)) => {
                assert!(crc.is_ok());
                assert_eq!(h2, h);
                assert_eq!(plain.len(), h.plain_len as usize);
            }
            Err(RecordError::Crc) => assert!(crc.is_err(), "open says Crc, check_crc says ok"),
            Err(RecordError::NotARecord(w)) => panic!("decode passed but open says {w}"),
            Err(_) => assert!(crc.is_ok(), "open got past a failing CRC"),
        }
    }
}

fn binding(u: &mut Unstructured) -> Binding {
    Binding {
        file_id: u.arbitrary().unwrap_or(2),
        offset: u.arbitrary().unwrap_or(0),
        generation: u.arbitrary().unwrap_or(1),
        session: u.arbitrary().unwrap_or(1),
        counter: u.arbitrary().unwrap_or(0),
    }
}

fn plaintext(u: &mut Unstructured) -> Vec<u8> {
    let len = u.int_in_range(1..=16384usize).unwrap_or(1);
    let n = u.int_in_range(1..=64usize).unwrap_or(1);
    let seed = u.bytes(n).unwrap_or(&[]);
    let seed = if seed.is_empty() { &b"odt"[..] } else { seed };
    if u.arbitrary::<bool>().unwrap_or(false) {
        // Compressible: the seed repeated.
        seed.iter().cycle().take(len).copied().collect()
    } else {
        // Incompressible-ish: a cheap generator seeded by the fuzzer.
        let mut x = seed.iter().fold(0x9e37_79b9_7f4a_7c15u64, |a, &b| {
            (a ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}

fn mutated(u: &mut Unstructured) {
    let c = cipher(u);
    let k = key(c, Purpose::Record);
    let b = binding(u);
    let plain = plaintext(u);
    let orig = record::build(k, c, &b, &plain);
    let (h0, p0) = record::open(k, &orig).expect("a record fresh from build opens");
    assert_eq!(p0, plain);

    let mut m = orig.clone();
    damage(u, &mut m);
    if u.arbitrary::<bool>().unwrap_or(true) {
        fix_record_crc(&mut m);
    }
    let got = record::open(k, &m);
    if m.starts_with(&orig) {
        let (h, p) = got.expect("an unchanged record (maybe with bytes after it) opens");
        assert_eq!(h, h0);
        assert_eq!(p, plain);
    } else {
        assert!(
            got.is_err(),
            "a damaged record opened: {} bytes became {} bytes {:?}",
            orig.len(),
            m.len(),
            first_difference(&orig, &m)
        );
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn authentic(u: &mut Unstructured) {
    let c = cipher(u);
    let k = key(c, Purpose::Record);
    let compressed = u.arbitrary::<bool>().unwrap_or(false);
    let (mut body, true_len): (Vec<u8>, usize) =
        if compressed && u.arbitrary::<bool>().unwrap_or(false) {
            // A real zstd frame of fuzzer bytes, maybe damaged: deep into the decompressor.
            let plain = plaintext(u);
            let mut z = zstd::bulk::compress(&plain, 1).expect("zstd compresses");
            if u.arbitrary::<bool>().unwrap_or(false) {
                damage(u, &mut z);
            }
            (z, plain.len())
        } else {
            let n = u.int_in_range(0..=4096usize).unwrap_or(0);
            let b = u.bytes(n).unwrap_or(&[]).to_vec();
            let n = b.len();
            (b, n)
        };
    let plain_len: u32 = match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => true_len as u32,
        1 => u.int_in_range(0..=(MAX_PLAIN as u32 + 1)).unwrap_or(1),
        2 => u.int_in_range(1..=65536u32).unwrap_or(1),
        _ => u.arbitrary().unwrap_or(1),
    };
    let b = binding(u);
    let stored_len = (body.len() + TAG_LEN) as u32;
    let mut hdr = layout(&Header {
        compressed,
        cipher: c,
        file_id: b.file_id,
        offset: b.offset,
        generation: b.generation,
        plain_len,
        stored_len,
        session: b.session,
        counter: b.counter,
        crc: 0,
    });
    let clear = body.clone();
    k.seal(b.counter, &hdr[..56], &mut body);
    let mut rec = hdr.to_vec();
    rec.extend_from_slice(&body);
    fix_record_crc(&mut rec);
    hdr.copy_from_slice(&rec[..HEADER_LEN]);

    let header_ok = plain_len != 0 && plain_len as usize <= MAX_PLAIN;
    match record::open(k, &rec) {
        Ok((h, p)) => {
            assert!(header_ok);
            assert_eq!(layout(&h), hdr);
            assert_eq!(p.len(), plain_len as usize);
            if !compressed {
                assert_eq!(p, clear, "uncompressed record opened to other bytes");
            }
        }
        Err(RecordError::NotARecord(w)) => assert!(!header_ok, "valid header refused: {w}"),
        Err(RecordError::Decompress(_)) => {
            assert!(header_ok);
            assert!(
                compressed || clear.len() != plain_len as usize,
                "uncompressed record of the right length refused"
            );
        }
        Err(e) => panic!("authentic record refused with {e}"),
    }
}
