//! Shared pieces: the fixed test keys, fuzzer-driven damage, CRC fix-ups.

use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::Unstructured;
use odt_store::crypto::cipher::{Cipher, Purpose, SessionKey};

/// Data key of every key the targets use (never a real one).
pub const DATA_KEY: [u8; 32] = [0; 32];
/// Session id of every key the targets use.
pub const SESSION: u64 = 1;

static KEYS: LazyLock<[SessionKey; 4]> = LazyLock::new(|| {
    let d = |c, p| SessionKey::derive(c, &DATA_KEY, SESSION, p);
    [
        d(Cipher::Aes256Gcm, Purpose::Record),
        d(Cipher::ChaCha20Poly1305, Purpose::Record),
        d(Cipher::Aes256Gcm, Purpose::Journal),
        d(Cipher::ChaCha20Poly1305, Purpose::Journal),
    ]
});

/// The fixed key for `cipher` and `purpose`.
pub fn key(cipher: Cipher, purpose: Purpose) -> &'static SessionKey {
    let c = match cipher {
        Cipher::Aes256Gcm => 0,
        Cipher::ChaCha20Poly1305 => 1,
    };
    let p = match purpose {
        Purpose::Record => 0,
        Purpose::Journal => 2,
    };
    &KEYS[c + p]
}

/// One of the two ciphers, chosen by the fuzzer.
pub fn cipher(u: &mut Unstructured) -> Cipher {
    if u.arbitrary::<bool>().unwrap_or(false) {
        Cipher::ChaCha20Poly1305
    } else {
        Cipher::Aes256Gcm
    }
}

/// Up to eight edits of `b` chosen by the fuzzer: bit flips, byte and u32 overwrites,
/// truncation, insertion, removal, appended bytes.
pub fn damage(u: &mut Unstructured, b: &mut Vec<u8>) {
    let n = u.int_in_range(1..=8u8).unwrap_or(1);
    for _ in 0..n {
        if b.is_empty() {
            b.push(u.arbitrary().unwrap_or(0));
            continue;
        }
        let at = u.choose_index(b.len()).unwrap_or(0);
        match u.int_in_range(0..=6u8).unwrap_or(0) {
            0 => b[at] ^= 1 << u.int_in_range(0..=7u8).unwrap_or(0),
            1 => b[at] = u.arbitrary().unwrap_or(0),
            2 => b.truncate(at),
            3 => b.insert(at, u.arbitrary().unwrap_or(0)),
            4 => {
                b.remove(at);
            }
            5 => {
                let v: u32 = u.arbitrary().unwrap_or(0);
                for (i, x) in v.to_le_bytes().into_iter().enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = x;
                    }
                }
            }
            _ => {
                let k = u.int_in_range(1..=32usize).unwrap_or(1);
                let tail = u.bytes(k).unwrap_or(&[0]);
                b.extend_from_slice(tail);
            }
        }
    }
}

/// Recomputes a CRC32 stored at `crc_at..crc_at+4` over `b[..crc_at]` and the body
/// `b[body_at..body_at+body_len]` (clipped to what is there), as an attacker who knows the
/// (keyless) layout would. Does nothing to a buffer too short to hold the CRC.
pub fn fix_crc(b: &mut [u8], crc_at: usize, body_at: usize, body_len: usize) {
    if b.len() < crc_at.saturating_add(4) || b.len() < body_at {
        return;
    }
    let end = body_at.saturating_add(body_len).min(b.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..crc_at]);
    h.update(&b[body_at..end]);
    let crc = h.finalize();
    b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Little-endian u32 at `at`, if the bytes are there.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
