//! Authenticated encryption of records and journal batches.
//!
//! Nonces never repeat: every appliance run (session) draws a random 64-bit session id, and
//! the key actually used is derived from the data key and that id (borg 2's scheme); inside
//! a session, nonces are a counter. A crash can never replay a (key, nonce) pair because the
//! next run has a new session id and thus a new key.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// Which AEAD a device set uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Cipher {
    /// AES-256-GCM (default: fastest with AES-NI).
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (for CPUs without AES instructions).
    ChaCha20Poly1305,
}

impl Cipher {
    /// Stable one-byte code stored in record headers.
    pub fn code(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
            Cipher::ChaCha20Poly1305 => 2,
        }
    }

    /// Inverse of [`Cipher::code`].
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }
}

impl std::str::FromStr for Cipher {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "aes256gcm" | "aes-256-gcm" | "aes" => Ok(Cipher::Aes256Gcm),
            "chacha20poly1305" | "chacha20-poly1305" | "chacha" => Ok(Cipher::ChaCha20Poly1305),
            _ => Err(format!(
                "unknown cipher {s:?}: use aes-256-gcm or chacha20-poly1305"
            )),
        }
    }
}

/// What a derived key is for; keeps record and journal key spaces apart.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// File data records.
    Record,
    /// Metadata journal batches.
    Journal,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct KeyBytes([u8; 32]);

enum Engine {
    /// ring's AES-256-GCM: its VAES/VPCLMULQDQ code runs about 3x faster here than the
    /// RustCrypto crate (the AEAD was a fifth of the appliance's CPU time copying a large
    /// file); same algorithm, same bytes on the device.
    Aes(Box<ring::aead::LessSafeKey>),
    ChaCha(Box<chacha20poly1305::ChaCha20Poly1305>),
}

/// An AEAD keyed for one (data key, session, purpose).
pub struct SessionKey {
    engine: Engine,
}

/// Authentication failed: wrong key, or the bytes or their binding were altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

impl SessionKey {
    /// Derives the key for `session` from the data key.
    pub fn derive(cipher: Cipher, data_key: &[u8; 32], session: u64, purpose: Purpose) -> Self {
        let context = match purpose {
            Purpose::Record => "odt 2026 record session key",
            Purpose::Journal => "odt 2026 journal session key",
        };
        let mut material = zeroize::Zeroizing::new([0u8; 40]);
        material[..32].copy_from_slice(data_key);
        material[32..].copy_from_slice(&session.to_le_bytes());
        let key = KeyBytes(blake3::derive_key(context, &material[..]));
        let engine = match cipher {
            Cipher::Aes256Gcm => Engine::Aes(Box::new(ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key.0).expect("32-byte key"),
            ))),
            Cipher::ChaCha20Poly1305 => Engine::ChaCha(Box::new(
                chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key.0).expect("32-byte key"),
            )),
        };
        SessionKey { engine }
    }

    fn nonce(counter: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&counter.to_le_bytes());
        n
    }

    /// Encrypts `buf` in place and appends the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], buf: &mut Vec<u8>) {
        let tag = self.seal_detached(counter, aad, buf);
        buf.extend_from_slice(&tag);
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_detached(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Self::nonce(counter);
        match &self.engine {
            Engine::Aes(k) => k
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    buf,
                )
                .expect("message within AEAD limits")
                .as_ref()
                .try_into()
                .expect("16-byte tag"),
            Engine::ChaCha(c) => c
                .encrypt_inout_detached(&nonce.into(), aad, buf.into())
                .expect("message within AEAD limits")
                .into(),
        }
    }

    /// Checks the tag and decrypts `buf` (ciphertext + tag) in place, truncating the tag.
    pub fn open(&self, counter: u64, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), AuthError> {
        let n = self.open_in_place(counter, aad, buf)?;
        buf.truncate(n);
        Ok(())
    }

    /// Checks the tag and decrypts `buf` (ciphertext + tag) in place; returns the plaintext
    /// length (the plaintext is `buf[..n]`). For callers that keep their own buffers.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, AuthError> {
        let n = buf.len().checked_sub(TAG_LEN).ok_or(AuthError)?;
        let nonce = Self::nonce(counter);
        let (msg, tag) = buf.split_at_mut(n);
        let tag: [u8; TAG_LEN] = tag.try_into().unwrap();
        let ok = match &self.engine {
            Engine::Aes(k) => k
                .open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::from(tag),
                    msg,
                    0..,
                )
                .is_ok(),
            Engine::ChaCha(c) => c
                .decrypt_inout_detached(&nonce.into(), aad, msg.into(), &tag.into())
                .is_ok(),
        };
        if !ok {
            return Err(AuthError);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_bytes_match_the_rustcrypto_implementation() {
        // Devices written before the switch to ring must stay readable and the other way
        // round: same key, nonce and AAD give the same ciphertext and tag.
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let key = [9u8; 32];
        let k = SessionKey::derive(Cipher::Aes256Gcm, &key, 77, Purpose::Record);
        let material = {
            let mut m = [0u8; 40];
            m[..32].copy_from_slice(&key);
            m[32..].copy_from_slice(&77u64.to_le_bytes());
            blake3::derive_key("odt 2026 record session key", &m)
        };
        let other = aes_gcm::Aes256Gcm::new_from_slice(&material).unwrap();
        for len in [0usize, 1, 15, 16, 17, 4096, 100_003] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut ours = plain.clone();
            k.seal(len as u64, b"binding", &mut ours);
            let mut theirs = plain.clone();
            let tag = other
                .encrypt_inout_detached(
                    &SessionKey::nonce(len as u64).into(),
                    b"binding",
                    theirs.as_mut_slice().into(),
                )
                .unwrap();
            theirs.extend_from_slice(&tag);
            assert_eq!(ours, theirs, "length {len}");
            k.open(len as u64, b"binding", &mut theirs).unwrap();
            assert_eq!(theirs, plain);
        }
    }

    #[test]
    fn roundtrip_both_ciphers_and_binding() {
        for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let k = SessionKey::derive(cipher, &[7; 32], 42, Purpose::Record);
            let mut b = b"secret bytes".to_vec();
            k.seal(5, b"aad", &mut b);
            assert_ne!(&b[..12], b"secret bytes");
            let mut c = b.clone();
            k.open(5, b"aad", &mut c).unwrap();
            assert_eq!(c, b"secret bytes");
            assert!(k.open(6, b"aad", &mut b.clone()).is_err());
            assert!(k.open(5, b"aaD", &mut b.clone()).is_err());
            let other = SessionKey::derive(cipher, &[7; 32], 43, Purpose::Record);
            assert!(other.open(5, b"aad", &mut b.clone()).is_err());
            let journal = SessionKey::derive(cipher, &[7; 32], 42, Purpose::Journal);
            assert!(journal.open(5, b"aad", &mut b.clone()).is_err());
        }
    }
}
