//! The superblock: `Superblock::parse` (the in-memory form of what `Superblock::read` does
//! to each copy).
//!
//! Modes (first byte): raw bytes; the bytes framed with the right magic and CRC so the
//! postcard decoder is reached; or a superblock built from fuzzer-chosen fields (biased
//! towards passing the geometry checks, so the checks and the layout helpers see values at
//! their edges), encoded with `Superblock::encode` and maybe damaged, CRC fixed. Contracts:
//! - no panic;
//! - what parses has the format version this build reads and the geometry `decode` promises,
//!   encodes to a slot image that parses to the same value, and fits a slot if its source did;
//! - the layout helpers of a superblock that parsed do not panic and describe a layout that
//!   fits the device: journal before the data area, segments inside the device before the
//!   end copies. `read()` also refuses a superblock larger than its device, and a device's
//!   size is a file offset (at most `i64::MAX`), so the helpers are checked for
//!   `device_size <= i64::MAX`.

use libfuzzer_sys::arbitrary::Unstructured;
use odt_store::crypto::cipher::Cipher;
use odt_store::format::frame;
use odt_store::format::superblock::{FORMAT_VERSION, JOURNAL_START, SLOT, Superblock};

use crate::util::{damage, fix_crc, u32_at};

const MIB: u64 = 1 << 20;

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        0 => check(u.take_rest()),
        1 => check(&frame::encode(b"ODTSUPR1", u.take_rest())),
        _ => fields(&mut u),
    }
}

/// A u64 that is often small, a multiple of a MiB, or at the edge of the type.
fn size(u: &mut Unstructured) -> u64 {
    let n: u64 = u.arbitrary().unwrap_or(0);
    match u.int_in_range(0..=4u8).unwrap_or(0) {
        0 => n,
        1 => (n % 4096) * MIB,
        2 => n % (64 * MIB),
        3 => u64::MAX - n % (64 * MIB),
        _ => (i64::MAX as u64).wrapping_sub(n % (64 * MIB)),
    }
}

fn fields(u: &mut Unstructured) {
    let device_count = u.int_in_range(0..=4u32).unwrap_or(1);
    let sb = Superblock {
        format_version: if u.ratio(1, 16).unwrap_or(false) {
            u.arbitrary().unwrap_or(0)
        } else {
            FORMAT_VERSION
        },
        set_id: u.arbitrary().unwrap_or(0),
        job_id: u.arbitrary().unwrap_or_default(),
        job_name: u.arbitrary().unwrap_or_default(),
        device_index: u.int_in_range(0..=4u32).unwrap_or(0),
        device_count,
        device_size: size(u),
        segment_size: size(u),
        journal_len: size(u),
        cipher: if u.arbitrary().unwrap_or(false) {
            Cipher::ChaCha20Poly1305
        } else {
            Cipher::Aes256Gcm
        },
        created_unix: u.arbitrary().unwrap_or(0),
        signing_public: u.arbitrary().unwrap_or_default(),
        wrapped_for_ingest: u.arbitrary().unwrap_or_default(),
        wrapped_for_customer: u.arbitrary().unwrap_or_default(),
        tls: odt_store::crypto::tls::TlsIdentity {
            cert_der: u.arbitrary().unwrap_or_default(),
            key_der: odt_store::crypto::tls::SecretBytes(u.arbitrary().unwrap_or_default()),
            spki_sha256: u.arbitrary().unwrap_or_default(),
        },
    };
    let orig = sb.encode();
    if u.arbitrary().unwrap_or(false) {
        let mut m = orig.clone();
        damage(u, &mut m);
        if let Some(n) = u32_at(&m, 8) {
            fix_crc(&mut m, 12usize.saturating_add(n as usize), 0, 0);
        }
        check(&m);
    } else {
        if let Ok(back) = Superblock::parse(&orig) {
            assert_eq!(back, sb, "an encoded superblock parses to another");
        }
        check(&orig);
    }
}

fn check(b: &[u8]) {
    let Ok(sb) = Superblock::parse(b) else {
        return;
    };
    assert_eq!(sb.format_version, FORMAT_VERSION);
    assert!(sb.device_index < sb.device_count);
    assert!(sb.segment_size >= 4 * MIB && sb.segment_size % MIB == 0);
    assert!(sb.device_size >= 4 * SLOT);

    let img = sb.encode();
    if b.len() as u64 <= SLOT {
        assert!(
            img.len() as u64 <= SLOT,
            "re-encoded superblock outgrew its slot"
        );
    }
    assert_eq!(
        Superblock::parse(&img),
        Ok(sb.clone()),
        "superblock round trip"
    );

    if sb.device_size > i64::MAX as u64 {
        return;
    }
    let data_start = sb.data_start();
    assert!(data_start % MIB == 0);
    assert!(
        JOURNAL_START
            .checked_add(sb.journal_len)
            .is_some_and(|end| data_start >= end),
        "data area overlaps the journal"
    );
    let count = sb.segment_count();
    if count > 0 {
        let last_end = sb.segment_start(count - 1) + sb.segment_size;
        assert!(
            last_end <= sb.device_size - 2 * SLOT,
            "segments overlap the end copies"
        );
    }
    let [first, last] = sb.copies();
    assert_eq!(first, 0);
    assert_eq!(last + SLOT, sb.device_size);
    let [s0, s1] = sb.seal_slots();
    assert_eq!(s0, SLOT);
    assert_eq!(s1 + 2 * SLOT, sb.device_size);
}
