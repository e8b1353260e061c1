//! The seal slot: `frame::decode(b"ODTSEAL1", ..)` then `postcard::from_bytes::<SignedSeal>`
//! (what `seal::read` does to each copy), and what the courier's check then calls on it:
//! `SignedSeal::code`, `SignedSeal::verify`, `seal::normalise_code`.
//!
//! Modes (first byte):
//! - raw: the bytes as a slot;
//! - framed: the bytes framed with the right magic and CRC, so postcard is reached;
//! - signed: a seal record built from fuzzer-chosen fields, signed with a fixed Ed25519 key,
//!   framed, then damaged (CRC optionally fixed).
//!
//! Contracts: no panic; a decoded seal re-encodes (framed) to a slot that decodes to the same
//! value; its code has the `XXXX-XXXX-XXXX` form in the Crockford alphabet and is its own
//! normal form; `verify` with the fixed key is false for anything the fuzzer made up, and
//! a damaged signed seal that still verifies carries exactly the record that was signed.

use std::sync::LazyLock;

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::arbitrary::Unstructured;
use odt_store::format::frame;
use odt_store::format::journal::Time;
use odt_store::format::seal_record::{self as seal, SealRecord, SealedDevice, SignedSeal};

use crate::util::{damage, fix_crc, u32_at};

const MAGIC: &[u8; 8] = b"ODTSEAL1";

static SIGNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));

fn public() -> [u8; 32] {
    SIGNER.verifying_key().to_bytes()
}

/// What `seal::read` does to one slot.
fn decode(slot: &[u8]) -> Option<SignedSeal> {
    let payload = frame::decode(MAGIC, slot).ok()?;
    postcard::from_bytes(payload).ok()
}

fn encode(s: &SignedSeal) -> Vec<u8> {
    frame::encode(MAGIC, &postcard::to_stdvec(s).expect("seal serialises"))
}

fn check_decoded(s: &SignedSeal) {
    assert_eq!(decode(&encode(s)).as_ref(), Some(s), "seal round trip");
    let code = s.code();
    assert_eq!(code.len(), 14);
    for (i, ch) in code.chars().enumerate() {
        if i == 4 || i == 9 {
            assert_eq!(ch, '-');
        } else {
            assert!(
                "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(ch),
                "code {code}"
            );
        }
    }
    assert_eq!(seal::normalise_code(&code), code);
    assert_eq!(seal::normalise_code(&code.to_lowercase()), code);
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mode = u.arbitrary::<u8>().unwrap_or(0) % 3;
    match mode {
        0 | 1 => {
            let framed = mode == 1;
            let rest = u.take_rest();
            let slot = if framed {
                frame::encode(MAGIC, rest)
            } else {
                rest.to_vec()
            };
            if let Some(s) = decode(&slot) {
                check_decoded(&s);
                assert!(!s.verify(&public()), "a made-up seal verifies");
                // Any key bytes: no panic.
                let _ = s.verify(&s.record.journal_hash);
            }
            // Codes typed by people: no panic, idempotent.
            if let Ok(t) = std::str::from_utf8(rest) {
                let n = seal::normalise_code(t);
                assert_eq!(seal::normalise_code(&n), n);
            }
        }
        _ => signed(&mut u),
    }
}

fn record(u: &mut Unstructured) -> SealRecord {
    let n = u.int_in_range(1..=4u32).unwrap_or(1);
    SealRecord {
        version: 2,
        job_id: u.arbitrary().unwrap_or_default(),
        set_id: u.arbitrary().unwrap_or(0),
        devices: (1..=n)
            .map(|index| SealedDevice {
                index,
                tail: u.arbitrary().unwrap_or(0),
                chain_head: u.arbitrary().unwrap_or_default(),
                next_segment: u.arbitrary().unwrap_or(0),
            })
            .collect(),
        journal_end: u.arbitrary().unwrap_or(0),
        journal_hash: u.arbitrary().unwrap_or_default(),
        manifest_root: u.arbitrary().unwrap_or_default(),
        files: u.arbitrary().unwrap_or(0),
        dirs: u.arbitrary().unwrap_or(0),
        bytes: u.arbitrary().unwrap_or(0),
        bundles: u.arbitrary().unwrap_or(0),
        sealed: Time {
            secs: u.arbitrary().unwrap_or(0),
            nanos: u.arbitrary().unwrap_or(0),
        },
        custody: Default::default(),
    }
}

fn signed(u: &mut Unstructured) {
    let rec = record(u);
    let signature = SIGNER
        .sign(&postcard::to_stdvec(&rec).unwrap())
        .to_bytes()
        .to_vec();
    let s = SignedSeal {
        record: rec,
        signature,
    };
    let orig = encode(&s);
    let back = decode(&orig).expect("a fresh seal slot decodes");
    assert_eq!(back, s);
    assert!(back.verify(&public()), "a fresh seal verifies");
    check_decoded(&back);

    let mut m = orig.clone();
    damage(u, &mut m);
    if u.arbitrary::<bool>().unwrap_or(true)
        && let Some(n) = u32_at(&m, 8)
    {
        fix_crc(&mut m, 12 + n as usize, 0, 0);
    }
    if let Some(d) = decode(&m) {
        check_decoded(&d);
        if d.verify(&public()) {
            assert_eq!(d.record, s.record, "a changed seal record verifies");
        }
    }
}
